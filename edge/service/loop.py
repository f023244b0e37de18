"""`metascope run`: the loop the systemd unit starts.

Each turn: take the newest frame, classify its cells, record the result, and tick the
periodic work (status, summary, retention, watchdog). Frames the loop could not take are
dropped at the source and counted, never queued. One bad frame is logged, counted and
skipped; ``source.max_failures`` failed captures (errors, garbage, or timeouts: a stalled
camera) in a row end the process with EXIT_SOURCE_FAILED so systemd restarts it, as do as many
failed frames in a row (EXIT_PIPELINE_FAILED). A busy or missing camera at start is waited
for, never an exit (edge/capture/camera_wait.py). SIGTERM/SIGINT: STOPPING=1, flush, exit 0.
Taking and classifying a frame, with failures counted, is edge/service/intake.py; recording it is
edge/service/recorder.py; the decisions live in edge/service/policies.py and the bookkeeping in
edge/service/run_stats.py.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge import __version__
from edge.capture.base import FrameSource, SourceError
from edge.capture.camera_wait import CameraRestarts, CameraWaiter
from edge.cells.scale import ScaleWatch
from edge.classify.classifier import Classifier
from edge.config import Config, ConfigError
from edge.errors import EnvironmentProblem, ExitCode, MetascopeError
from edge.logs import RateLimitedWarning, log, setup_logging
from edge.notify import WATCHDOG_MIN_INTERVAL_S, Notifier
from edge.record.capped_folder import free_bytes
from edge.record.store import RunInfo
from edge.records import FrameResult
from edge.service.intake import FrameIntake, StopRun
from edge.service.pipeline import Pipeline
from edge.service.policies import DiskGuard, Every, Retention, watchdog_problem
from edge.service.recorder import STORE_RETRY_S, Recorder
from edge.service.run_stats import Counters, RunStats
from edge.service.state_lock import StateLock

__all__ = ["EXIT_OK", "EXIT_PIPELINE_FAILED", "EXIT_SOURCE_FAILED", "Service", "setup_logging"]

RETENTION_LINE_INTERVAL_S = 60.0

EXIT_OK, EXIT_SOURCE_FAILED, EXIT_PIPELINE_FAILED = ExitCode.OK, ExitCode.SOURCE_FAILED, ExitCode.PIPELINE_FAILED


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
        self.stats = RunStats()
        self.recorder = Recorder(config, self.stats, self.pipeline.window_px, free_space)
        self.scale = ScaleWatch(classifier.card.facts.training_median_area_px, classifier.input_spec.pixel_size_um,
                                config.pipeline.pixel_size_um or None, config.pipeline.mode == "whole")  # fmt: skip
        self.stop_reason: str | None = None
        self.exit_reason = ""
        self.intake = FrameIntake(source, self.pipeline, self.stats.counters, config.source.timeout_s,
                                  config.source.max_failures, lambda: self.stop_reason is not None)  # fmt: skip
        self.camera_restarts = CameraRestarts(config.state_path) if config.source.kind == "picamera2" else None
        self._budget_warning = RateLimitedWarning(10.0)

    @property
    def counters(self) -> Counters:
        return self.stats.counters

    @property
    def run_id(self) -> int | None:
        return self.recorder.run_id

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    # ------------------------------------------------------------------- run
    def run(self) -> int:
        config = self.config
        problem = watchdog_problem(self.notifier.watchdog_period_s, config.source.timeout_s, WATCHDOG_MIN_INTERVAL_S)
        if problem:
            raise ConfigError(problem)
        lock = StateLock(config.state_path)
        try:
            config.state_path.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as exc:
            lock.release()
            raise EnvironmentProblem(f"state directory {config.state_path}: {exc}") from exc
        started = time.monotonic()
        try:
            code = self._run_locked()
            if self.camera_restarts is not None:
                self.camera_restarts.record(code == EXIT_SOURCE_FAILED, time.monotonic() - started)
            return code
        finally:
            lock.release()

    def _run_locked(self) -> int:
        previous_handlers = _stop_on_signals(self.request_stop)
        exit_code = EXIT_OK
        try:
            try:
                if not self._open_source():
                    self.exit_reason = f"{self.stop_reason} received while waiting for the camera"
                    return EXIT_OK
            except SourceError as exc:
                log.error("source: %s", exc)
                self.exit_reason = f"source failed to open: {exc}"
                return EXIT_SOURCE_FAILED
            try:
                # After the source opens, so the run records what the camera actually runs with.
                self.open_store()
                _log_start(self)
                self.notifier.ready(f"run {self.run_id}: classifying")
                exit_code = self._loop()
            except MetascopeError as exc:  # a database waiting cannot fix (edge/record/opening.py)
                self.exit_reason = str(exc)
                raise
        finally:
            self.notifier.stopping(f"stopping: {self.exit_reason or self.stop_reason}")
            try:
                self.source.close()
            except Exception as exc:  # a camera that fails on close must not lose the results
                log.warning("source: close failed: %s", exc)
            self._finish()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return exit_code

    def open_store(self) -> bool:
        return self.recorder.open(_run_info(self))

    def _open_source(self) -> bool:
        """Open the source; False when stopped first. A busy or missing camera is waited for,
        never given up on, and after runs that ended with a camera failure the camera gets a
        growing pause before it is opened again (edge/capture/camera_wait.py)."""
        waiter = CameraWaiter(self.notifier, lambda: self.stop_reason is not None)
        failures = self.camera_restarts.failures() if self.camera_restarts is not None else 0
        return waiter.back_off_after_failed_runs(failures) and waiter.open(self.source)

    def _loop(self) -> int:
        """Take a frame, classify it, record it, tick: until stopped or something gives up."""
        ticks = _Ticks(self)
        try:
            while self.stop_reason is None:
                if self.max_frames is not None and self.counters.frames >= self.max_frames:
                    self.exit_reason = f"--max-frames {self.max_frames} reached"
                    break
                frame, waited_ms = self.intake.take()
                result = None if frame is None else self.intake.classify(frame)
                if result is not None:
                    result.timings_ms["capture_wait"] = waited_ms
                    self._record(result, ticks.disk.allows_writing(time.monotonic()))
                ticks.tick(time.monotonic())
        except StopRun as stop:
            self.exit_reason = stop.reason
            return stop.code
        if self.stop_reason is not None and not self.exit_reason:
            self.exit_reason = f"{self.stop_reason} received"
        return EXIT_OK

    def _record(self, result: FrameResult, disk_ok: bool) -> None:
        """Record the frame (when the disk allows), check the budget, count it, snapshot it."""
        timings = result.timings_ms
        started = time.perf_counter()
        processed_ms = timings["detect"] + timings["preprocess"] + timings["infer"]
        result.over_budget = processed_ms > self.pipeline.budget_ms
        frame_id = self.recorder.record(result, disk_ok)
        timings["store"] = (time.perf_counter() - started) * 1000.0
        timings["total"] = processed_ms + timings["store"]
        if timings["total"] > self.pipeline.budget_ms:
            self._over_budget(result, frame_id)
        self.stats.add_frame(result, time.monotonic())
        if warning := self.scale.add(seen.area for seen in result.detections if seen.view == 0):
            log.warning("scale: %s", warning)
        if frame_id is not None:
            self.recorder.snapshot(result, frame_id, self.counters.frames)
        if self.observer is not None:
            self.observer(result)

    def _over_budget(self, result: FrameResult, frame_id: int | None) -> None:
        timings = result.timings_ms
        self.counters.over_budget += 1
        self._budget_warning(
            "frame %d over budget: %.1f ms > %.0f ms (%s)",
            result.frame.index,
            timings["total"],
            self.pipeline.budget_ms,
            ", ".join(f"{stage} {timings[stage]:.1f}" for stage in ("detect", "preprocess", "infer", "store")),
        )
        if frame_id is not None and not result.over_budget:
            result.over_budget = True
            self.recorder.mark_over_budget(frame_id)

    def _finish(self) -> None:
        self.recorder.finish(self.pipeline.close_all(), self.exit_reason or "stopped")
        self.write_status("stopped")
        log.info("stopped: %s; %s", self.exit_reason or "stopped", self.summary_line())
        if self.run_id is None or not self.config.database_path.exists():
            log.info("results: nothing recorded (%s was not created)", self.config.database_path)
        else:
            log.info("results: database %s, snapshots %s", self.config.database_path, self.config.snapshot_dir)

    # ---------------------------------------------------------------- status
    def summary_line(self) -> str:
        if self.run_id is None:  # stopped before the store opened: no run row, no figures
            return "summary: nothing recorded, no run was started"
        warning = self.scale.warning()
        return self.stats.summary_line(self.run_id) + (f"; scale: {warning}" if warning else "")

    def write_status(self, state: str) -> None:
        self.recorder.write_status(self.status(state))

    def status(self, state: str) -> dict[str, Any]:
        """status.json's content (the live view shows it too)."""
        return self.stats.status(
            state,
            run_id=self.run_id,
            source=getattr(self.source, "description", ""),
            model=self.classifier.card.name,
            model_sha256=self.classifier.sha256,
            mode=self.config.pipeline.mode,
            budget_ms=self.pipeline.budget_ms,
            exit_reason=self.exit_reason or None,
        )


def _stop_on_signals(request_stop: Callable[[str], None]) -> dict[int, Any]:
    """SIGTERM and SIGINT ask the loop to stop (in the main thread only); the handlers they had."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda s, _f: request_stop(signal.Signals(s).name))
    return previous


def _log_start(service: Service) -> None:
    classifier = service.classifier
    log.info(
        "started run %s: metascope %s, source %s, model %s (%s, %d threads, sha256 %s…), mode %s, "
        "budget %.0f ms a frame, database %s",
        service.run_id,
        __version__,
        service.source.description,
        classifier.card.name,
        classifier.interpreter_name,
        classifier.threads,
        classifier.sha256[:12],
        service.config.pipeline.mode,
        service.pipeline.budget_ms,
        service.config.database_path,
    )
    log.info("%s; clusters: %s", service.scale.start_line(), service.pipeline.cluster_rule)


def _run_info(service: Service) -> RunInfo:
    """What the run row records: the model, interpreter, source, mode and the whole config."""
    classifier = service.classifier
    return RunInfo(
        model_name=classifier.card.name,
        model_sha256=classifier.sha256,
        interpreter=f"{classifier.interpreter_name} {classifier.interpreter_version}",
        source=getattr(service.source, "description", type(service.source).__name__),
        mode=service.config.pipeline.mode,
        threshold=service.pipeline.threshold,
        window_px=service.pipeline.window_px,
        config={**service.config.as_dict(), "origin": service.config.origin, **_applied_camera(service.source)},
    )


def _applied_camera(source: FrameSource) -> dict[str, Any]:
    """What a camera source read back once open (sensor mode, ScalerCrop, colour space...),
    stored with the run's config as "camera_applied"; nothing for other sources."""
    applied = getattr(source, "applied", None)
    return {"camera_applied": applied} if applied else {}


class _Ticks:
    """The loop's periodic work, done at the end of every turn: the watchdog, an aged batch's
    commit, status.json, the summary line, a bounded step of retention, and (while the database
    could not be opened) another try at it; the disk guard is asked before each store."""

    def __init__(self, service: Service):
        config, recorder = service.config, service.recorder
        self.service = service
        self.status = Every(config.service.status_interval_s)
        self.summary = Every(config.service.summary_interval_s, first_after_s=config.service.summary_interval_s)
        self.retention = Retention(config.store.retention_days, config.store.max_db_mb, recorder.retention_failed)
        self.disk = DiskGuard(config.state_path, config.store.min_free_mb, service.free_space, recorder.disk_low)
        self.store_retry = Every(STORE_RETRY_S, first_after_s=STORE_RETRY_S)
        # Under a small size cap a pass ends after nearly every commit: one line a minute says it.
        self.retention_line = Every(RETENTION_LINE_INTERVAL_S)
        self.deleted_unlogged = 0

    def tick(self, now: float) -> None:
        service, recorder = self.service, self.service.recorder
        service.notifier.watchdog()
        if recorder.store is None:
            if self.store_retry.due(now) and service.open_store():
                log.info("store: results database %s open; storing from now on", service.config.database_path)
        else:
            recorder.commit_aged()
        if self.status.due(now):
            service.write_status("running")
        if self.summary.due(now):
            log.info("%s", service.summary_line())
        if recorder.store is not None:
            self.deleted_unlogged += self.retention.step(recorder.store, now) or 0
            if self.deleted_unlogged and self.retention_line.due(now):
                log.info("retention: deleted the %d oldest frames and their views", self.deleted_unlogged)
                self.deleted_unlogged = 0
