"""The first half of a loop turn: the newest frame from the source, and the pipeline's result
for it. A failed capture (an error, garbage, a timeout: a stalled camera) or a frame that fails
in the pipeline is counted, warned about at most every 10 s and skipped; ``source.max_failures``
of either in a row end the run (StopRun), so systemd restarts the service."""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.capture.base import CaptureTimeout, EndOfSource, Frame, FrameSource, NothingNew, SourceError, check_frame
from edge.errors import ExitCode
from edge.logs import RateLimitedWarning, log
from edge.records import FrameResult
from edge.service.pipeline import Pipeline
from edge.service.policies import FailureStreak
from edge.service.run_stats import Counters


class StopRun(Exception):
    """Ends the loop: ``code`` is the process's exit status, ``reason`` what the run records."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class FrameIntake:
    def __init__(
        self,
        source: FrameSource,
        pipeline: Pipeline,
        counters: Counters,
        timeout_s: float,
        max_failures: int,
        stopping: Callable[[], bool],
    ):
        self.source, self.pipeline, self.counters = source, pipeline, counters
        self.timeout_s = timeout_s
        self.stopping = stopping
        self.capture_failures = FailureStreak(max_failures)
        self.frame_failures = FailureStreak(max_failures)
        self._capture_warning = RateLimitedWarning(10.0)
        self._frame_warning = RateLimitedWarning(10.0)

    def take(self) -> tuple[Frame | None, float]:
        """(the newest frame, ms waited for it), or (None, ms) after a counted failed capture."""
        waiting = time.perf_counter()
        try:
            frame = self.source.next_frame(self.timeout_s, self.stopping)
            check_frame(frame.pixels)
        except EndOfSource as exc:
            raise StopRun(ExitCode.OK, str(exc)) from None
        except NothingNew:
            return None, (time.perf_counter() - waiting) * 1000.0
        except SourceError as exc:
            if not (self.stopping() and isinstance(exc, CaptureTimeout)):
                self._capture_failed(exc)
            return None, (time.perf_counter() - waiting) * 1000.0
        finally:
            self._count_skipped_files()
        self.capture_failures.succeeded()
        self.counters.dropped += frame.dropped_before
        return frame, (time.perf_counter() - waiting) * 1000.0

    def _count_skipped_files(self) -> None:
        """A replayed file that cannot be a frame is skipped by the source itself (not a failed capture)."""
        self.counters.skipped_files = getattr(self.source, "skipped", 0)

    def _capture_failed(self, exc: SourceError) -> None:
        self.counters.source_failures += 1
        streak = self.capture_failures
        given_up = streak.failed()
        self._capture_warning("source: %s (%d in a row, limit %d)", exc, streak.count, streak.limit)
        if given_up:
            log.error("source: %d failed captures in a row; exiting so systemd restarts the service", streak.count)
            raise StopRun(ExitCode.SOURCE_FAILED, f"source failed {streak.count} times in a row: {exc}") from None

    def classify(self, frame: Frame) -> FrameResult | None:
        """The frame's result, or None for a frame that failed (counted; too many in a row stop)."""
        try:
            result = self.pipeline.process(frame)
        except Exception as exc:  # one bad frame never stops the service
            self.counters.bad_frames += 1
            self._frame_warning("frame %d: not classified: %s: %s", frame.index, type(exc).__name__, exc)
            if self.frame_failures.failed():
                failures = self.frame_failures.count
                log.error("pipeline: %d frames failed in a row; exiting", failures)
                reason = f"{failures} frames failed in a row: {type(exc).__name__}: {exc}"
                raise StopRun(ExitCode.PIPELINE_FAILED, reason) from None
            return None
        self.frame_failures.succeeded()
        return result
