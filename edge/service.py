"""`metascope run`: the loop the systemd unit starts.

capture (newest frame first) -> detect -> preprocess -> classify -> store, once per frame,
with per-stage timings against a latency budget. Frames the loop could not take are dropped
at the source and counted, never queued. One bad frame is logged, counted and skipped;
``source.max_failures`` failed captures (errors, garbage, or timeouts: a stalled camera) in a
row end the process with EXIT_SOURCE_FAILED so systemd restarts it. SIGTERM/SIGINT: STOPPING=1,
flush the database, exit 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.config import Config
from edge.model import Classifier
from edge.notify import Notifier
from edge.pipeline import STAGES, FrameResult, Pipeline
from edge.snapshots import SnapshotWriter, free_bytes
from edge.sources.base import CaptureTimeout, EndOfSource, FrameSource, SourceError, check_frame
from edge.store import ResultStore, RunInfo, iso_utc

EXIT_OK, EXIT_SOURCE_FAILED, EXIT_PIPELINE_FAILED = 0, 3, 4
ROLLING_SAMPLES = 1000  # the rolling p50/p99 cover the last this many frames
RETENTION_INTERVAL_S = 600.0
DISK_CHECK_INTERVAL_S = 1.0
WARNING_INTERVAL_S = 60.0  # repeated warnings (disk low, store errors) at most this often

log = logging.getLogger("metascope")


def setup_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr. Under systemd (JOURNAL_STREAM set) each line starts with
    the syslog priority as <N>, which journald turns into the entry's priority, and carries no
    time stamp (the journal adds one)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>{record.getMessage()}"


class RollingLatency:
    """The last ROLLING_SAMPLES values of each stage, in ms."""

    def __init__(self, samples: int = ROLLING_SAMPLES):
        self._values = {stage: deque(maxlen=samples) for stage in STAGES}

    def add(self, timings_ms: dict[str, float]) -> None:
        for stage, value in timings_ms.items():
            if stage in self._values:
                self._values[stage].append(value)

    def summary(self) -> dict[str, dict[str, float]]:
        result = {}
        for stage, values in self._values.items():
            if values:
                p50, p99 = np.percentile(np.fromiter(values, dtype=np.float64), (50, 99))
                result[stage] = {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "n": len(values)}
        return result


@dataclass
class Counters:
    frames: int = 0  # classified
    cells: int = 0
    positives: int = 0
    clusters: int = 0
    dropped: int = 0  # frames the source produced that the loop could not take
    over_budget: int = 0
    bad_frames: int = 0  # frames that failed in detect/preprocess/classify
    source_failures: int = 0  # failed or timed-out captures
    unsaved_frames: int = 0  # classified but not written (disk low or a store error)
    store_errors: int = 0
    snapshots: int = 0
    snapshots_skipped: int = 0  # wanted, but the disk was too full for snapshots

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class RateLimitedWarning:
    def __init__(self, interval_s: float = WARNING_INTERVAL_S):
        self.interval_s = interval_s
        self._last = float("-inf")
        self.suppressed = 0

    def __call__(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            suffix = f" ({self.suppressed} more since the last such warning)" if self.suppressed else ""
            log.warning(message + suffix, *args)
            self._last, self.suppressed = now, 0
        else:
            self.suppressed += 1


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


class Service:
    def __init__(
        self,
        config: Config,
        classifier: Classifier,
        source: FrameSource,
        *,
        max_frames: int | None = None,
        notifier: Notifier | None = None,
        free_space: Callable[[Path], int] = free_bytes,
        observer: Callable[[FrameResult], None] | None = None,
    ):
        self.config = config
        self.classifier = classifier
        self.source = source
        self.max_frames = max_frames
        self.notifier = notifier or Notifier()
        self.free_space = free_space
        self.observer = observer
        self.pipeline = Pipeline(classifier, config)
        self.counters = Counters()
        self.latency = RollingLatency()
        self.stop_reason: str | None = None
        self.exit_reason = ""
        self.run_id: int | None = None
        self.started_at = time.time()
        self._fps_window: deque[float] = deque(maxlen=200)
        self._store_warning = RateLimitedWarning()
        self._disk_warning = RateLimitedWarning()
        self._budget_warning = RateLimitedWarning(10.0)
        self._frame_warning = RateLimitedWarning(10.0)

    # --------------------------------------------------------------- signals
    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda s, _f: self.request_stop(signal.Signals(s).name))
        return previous

    # ------------------------------------------------------------------- run
    def run(self) -> int:
        config = self.config
        state = config.state_path
        state.mkdir(parents=True, exist_ok=True)
        store = ResultStore(config.database_path, config.store.commit_interval_s)
        snapshots = SnapshotWriter(config.snapshot_dir, config.snapshots, self.free_space)
        self.run_id = store.start_run(self._run_info())
        store.commit()
        previous_handlers = self._install_signal_handlers()
        exit_code = EXIT_OK
        try:
            self._apply_retention(store)
            try:
                self.source.open()
            except SourceError as exc:
                log.error("source: %s", exc)
                self.exit_reason = f"source failed to open: {exc}"
                return EXIT_SOURCE_FAILED
            log.info(
                "started run %s: metascope %s, source %s, model %s (%s, %d threads, sha256 %s…), mode %s, "
                "budget %.0f ms a frame, database %s",
                self.run_id,
                __version__,
                self.source.description,
                self.classifier.card.name,
                self.classifier.interpreter_name,
                self.classifier.threads,
                self.classifier.sha256[:12],
                config.pipeline.mode,
                self.pipeline.budget_ms,
                config.database_path,
            )
            self.notifier.ready(f"run {self.run_id}: classifying")
            exit_code = self._loop(store, snapshots)
        finally:
            self.notifier.stopping(f"stopping: {self.exit_reason or self.stop_reason}")
            try:
                self.source.close()
            except Exception as exc:  # a camera that fails on close must not lose the results
                log.warning("source: close failed: %s", exc)
            self._finish(store, snapshots)
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return exit_code

    def _run_info(self) -> RunInfo:
        classifier = self.classifier
        return RunInfo(
            model_name=classifier.card.name,
            model_sha256=classifier.sha256,
            interpreter=f"{classifier.interpreter_name} {classifier.interpreter_version}",
            source=getattr(self.source, "description", type(self.source).__name__),
            mode=self.config.pipeline.mode,
            threshold=self.pipeline.threshold,
            window_px=self.pipeline.window_px,
            config={**self.config.as_dict(), "origin": self.config.origin},
        )

    def _loop(self, store: ResultStore, snapshots: SnapshotWriter) -> int:
        config = self.config
        source_failures = pipeline_failures = 0
        budget_ms = self.pipeline.budget_ms
        max_failures = config.source.max_failures
        now = time.monotonic()
        next_status = now
        next_summary = now + config.service.summary_interval_s
        next_retention = now + RETENTION_INTERVAL_S
        next_disk_check = now
        disk_ok = True
        while self.stop_reason is None:
            if self.max_frames is not None and self.counters.frames >= self.max_frames:
                self.exit_reason = f"--max-frames {self.max_frames} reached"
                break
            waiting = time.perf_counter()
            try:
                frame = self.source.next_frame(config.source.timeout_s, lambda: self.stop_reason is not None)
                check_frame(frame.pixels)
            except EndOfSource as exc:
                self.exit_reason = str(exc)
                break
            except SourceError as exc:
                if self.stop_reason is not None and isinstance(exc, CaptureTimeout):
                    break
                source_failures += 1
                self.counters.source_failures += 1
                log.warning("source: %s (%d in a row, limit %d)", exc, source_failures, max_failures)
                if source_failures >= max_failures:
                    log.error(
                        "source: %d failed captures in a row; exiting so systemd restarts the service", source_failures
                    )
                    self.exit_reason = f"source failed {source_failures} times in a row: {exc}"
                    return EXIT_SOURCE_FAILED
                continue
            source_failures = 0
            ready = time.perf_counter()
            self.counters.dropped += frame.dropped_before
            try:
                result = self.pipeline.process(frame)
            except Exception as exc:  # one bad frame never stops the service
                pipeline_failures += 1
                self.counters.bad_frames += 1
                self._frame_warning("frame %d: not classified: %s: %s", frame.index, type(exc).__name__, exc)
                if pipeline_failures >= max_failures:
                    log.error("pipeline: %d frames failed in a row; exiting", pipeline_failures)
                    self.exit_reason = f"{pipeline_failures} frames failed in a row: {type(exc).__name__}: {exc}"
                    return EXIT_PIPELINE_FAILED
                continue
            pipeline_failures = 0
            timings = result.timings_ms
            timings["capture_wait"] = (ready - waiting) * 1000.0
            result.over_budget = (time.perf_counter() - ready) * 1000.0 > budget_ms

            # ------------------------------------------------------- store
            stored_at = time.perf_counter()
            mono = time.monotonic()
            if mono >= next_disk_check:
                disk_ok = self._disk_ok(store)
                next_disk_check = mono + DISK_CHECK_INTERVAL_S
            frame_id = None
            if disk_ok:
                try:
                    frame_id = store.add_frame(result)
                    store.maybe_commit()
                except sqlite3.Error as exc:
                    lost = store.pending_frames
                    store.rollback()
                    self.counters.store_errors += 1
                    self.counters.unsaved_frames += max(lost, 1)
                    frame_id = None
                    self._store_warning(
                        "store: write failed (%s); %d uncommitted frames lost, classification goes on", exc, lost
                    )
            else:
                self.counters.unsaved_frames += 1
            done = time.perf_counter()
            timings["store"] = (done - stored_at) * 1000.0
            timings["total"] = (done - ready) * 1000.0
            if timings["total"] > budget_ms:
                self.counters.over_budget += 1
                self._budget_warning(
                    "frame %d over budget: %.1f ms > %.0f ms (%s)",
                    frame.index,
                    timings["total"],
                    budget_ms,
                    ", ".join(f"{stage} {timings[stage]:.1f}" for stage in ("detect", "preprocess", "infer", "store")),
                )
                if frame_id is not None and not result.over_budget:
                    result.over_budget = True
                    store.mark_over_budget(frame_id)

            # --------------------------------------------------- snapshots
            counters = self.counters
            counters.frames += 1
            counters.cells += len(result.cells)
            counters.positives += result.positives
            counters.clusters += result.clusters
            if frame_id is not None and snapshots.wanted(result, counters.frames):
                started = time.perf_counter()
                name = snapshots.write(result, self.run_id)
                if name is not None:
                    store.set_snapshot(frame_id, name)
                timings["snapshot"] = (time.perf_counter() - started) * 1000.0
            counters.snapshots, counters.snapshots_skipped = snapshots.written, snapshots.skipped_low_disk

            self.latency.add(timings)
            self._fps_window.append(mono)
            if self.observer is not None:
                self.observer(result)
            self.notifier.watchdog()
            if mono >= next_status:
                self.write_status("running")
                next_status = mono + config.service.status_interval_s
            if mono >= next_summary:
                log.info("%s", self.summary_line())
                next_summary = mono + config.service.summary_interval_s
            if mono >= next_retention:
                self._apply_retention(store)
                next_retention = mono + RETENTION_INTERVAL_S
        if self.stop_reason is not None and not self.exit_reason:
            self.exit_reason = f"{self.stop_reason} received"
        return EXIT_OK

    def _disk_ok(self, store: ResultStore) -> bool:
        free = self.free_space(self.config.state_path)
        if free >= self.config.store.min_free_mb * 1024 * 1024:
            return True
        try:
            store.commit()  # whatever is already batched goes in while there is room
        except sqlite3.Error:
            store.rollback()
        self._disk_warning(
            "disk: only %.0f MB free under %s (store.min_free_mb %.0f): results are not being written; "
            "classification goes on and writing resumes when space returns",
            free / 1024 / 1024,
            self.config.state_path,
            self.config.store.min_free_mb,
        )
        return False

    def _apply_retention(self, store: ResultStore) -> None:
        config = self.config.store
        try:
            deleted = store.apply_retention(config.retention_days, config.max_db_mb)
        except sqlite3.Error as exc:
            self._store_warning("store: retention failed: %s", exc)
            return
        if deleted:
            log.info("retention: deleted the %d oldest frames and their cells", deleted)

    def _finish(self, store: ResultStore, snapshots: SnapshotWriter) -> None:
        try:
            store.end_run(self.exit_reason or "stopped")
        except sqlite3.Error as exc:
            log.error("store: final commit failed: %s", exc)
            store.rollback()
        finally:
            store.close()
        self.counters.snapshots = snapshots.written
        self.write_status("stopped")
        log.info("stopped: %s; %s", self.exit_reason or "stopped", self.summary_line())
        log.info("results: database %s, snapshots %s", self.config.database_path, self.config.snapshot_dir)

    # ---------------------------------------------------------------- status
    def fps(self) -> float:
        window = self._fps_window
        if len(window) < 2 or window[-1] == window[0]:
            return 0.0
        return (len(window) - 1) / (window[-1] - window[0])

    def summary_line(self) -> str:
        c = self.counters
        total = self.latency.summary().get("total", {})
        latency = f"p50/p99 {total['p50_ms']:.1f}/{total['p99_ms']:.1f} ms" if total else "no latency yet"
        return (
            f"summary: run {self.run_id}, {c.frames} frames ({self.fps():.1f} fps), {c.cells} cells, "
            f"{c.positives} positive, {c.clusters} clusters, {c.dropped} dropped, {c.over_budget} over budget, "
            f"{c.bad_frames} bad, {c.source_failures} capture failures, {c.unsaved_frames} unsaved; {latency}"
        )

    def write_status(self, state: str) -> None:
        status = {
            "state": state,
            "pid": os.getpid(),
            "run_id": self.run_id,
            "started_at": iso_utc(self.started_at),
            "updated_at": iso_utc(time.time()),
            "source": getattr(self.source, "description", ""),
            "model": self.classifier.card.name,
            "model_sha256": self.classifier.sha256,
            "mode": self.config.pipeline.mode,
            "budget_ms": self.pipeline.budget_ms,
            "fps": round(self.fps(), 2),
            "counters": self.counters.as_dict(),
            "latency_ms": self.latency.summary(),
            "exit_reason": self.exit_reason or None,
        }
        try:
            write_json_atomic(self.config.status_path, status)
        except OSError as exc:
            self._store_warning("status: cannot write %s: %s", self.config.status_path, exc)
