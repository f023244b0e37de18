"""A capture thread that keeps only the newest frame: the camera never waits for the service,
and the service never works through a queue of stale frames."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edge.capture.base import CaptureTimeout, Frame, SourceError

WAIT_SLICE_S = 0.1  # how often a waiting service checks whether it has been asked to stop
ERROR_PAUSE_S = 0.05  # after a failed capture, so a camera that fails at once does not spin a core


class LatestFrameCapture:
    """Runs ``grab()`` in a daemon thread, as fast as it returns; ``next_frame`` hands over the
    newest frame and counts the ones it replaced as dropped. A ``grab`` that hangs leaves the
    service timing out (and the daemon thread never blocks the process from exiting)."""

    def __init__(self, grab: Callable[[], np.ndarray], name: str = "capture"):
        self._grab = grab
        self._name = name
        self._condition = threading.Condition()
        self._latest: tuple[int, np.ndarray, float] | None = None
        self._error: BaseException | None = None
        self._taken = 0
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> LatestFrameCapture:
        self._running = True
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self, join_timeout_s: float = 1.0) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(join_timeout_s)  # a hung grab() stays behind as a daemon thread

    def _run(self) -> None:
        sequence = 0
        while self._running:
            try:
                pixels = self._grab()
            except BaseException as exc:  # reported to the service, which counts and decides
                with self._condition:
                    self._error = exc
                    self._condition.notify_all()
                time.sleep(ERROR_PAUSE_S)
                continue
            sequence += 1
            with self._condition:
                self._latest = (sequence, pixels, time.time())
                self._condition.notify_all()

    def next_frame(self, timeout_s: float, should_stop: Callable[[], bool] | None = None) -> Frame:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                if self._error is not None:
                    error, self._error = self._error, None
                    if isinstance(error, SourceError):
                        raise error
                    raise SourceError(f"capture failed: {type(error).__name__}: {error}") from error
                latest = self._latest
                if latest is not None and latest[0] > self._taken:
                    sequence, pixels, captured_at = latest
                    dropped = sequence - self._taken - 1
                    self._taken = sequence
                    self._latest = None  # release the buffer: the service owns this frame now
                    return Frame(pixels=pixels, captured_at=captured_at, index=sequence - 1, dropped_before=dropped)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CaptureTimeout(f"no frame from the camera within {timeout_s:g} s (stalled?)")
                if should_stop is not None and should_stop():
                    raise CaptureTimeout("stopping while waiting for a frame")
                self._condition.wait(min(remaining, WAIT_SLICE_S))
