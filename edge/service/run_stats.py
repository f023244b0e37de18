"""What a run has done so far: counters, rolling per-stage latency, frames per second, the
summary line in the log and the status.json that `metascope status` reads."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.record.times import iso_utc
from edge.records import STAGES, ClosedCell, FrameResult

ROLLING_SAMPLES = 1000  # the rolling p50/p99 cover the last this many frames
FPS_WINDOW = 200  # frames per second over the last this many frames


@dataclass
class Counters:
    frames: int = 0  # classified
    cells: int = 0  # distinct (tracked) cells found
    views: int = 0  # model calls
    open_cells: int = 0  # cells followed now (their track has not ended)
    closed_cells: int = 0  # cells whose track ended, with their final call
    positives: int = 0  # closed cells called positive
    clusters: int = 0  # closed cells that were clusters
    dropped: int = 0  # frames the source produced that the loop could not take
    over_budget: int = 0
    bad_frames: int = 0  # frames that failed in detect/preprocess/classify
    source_failures: int = 0  # failed or timed-out captures
    skipped_files: int = 0  # replay: files that could not be a frame (unreadable, too small), skipped by name
    unsaved_frames: int = 0  # classified but not written (disk low or a store error)
    store_errors: int = 0
    snapshots: int = 0
    snapshots_skipped: int = 0  # wanted, but the disk was too full for snapshots
    snapshot_failures: int = 0  # wanted, but the write (or the clean-up making room for it) failed
    crop_failures: int = 0  # a crop not kept: its write, or the clean-up making room for it, failed
    status_failures: int = 0  # status.json could not be written

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


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


class RunStats:
    """Counters and latency of one run, and the two ways they are reported."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.latency = RollingLatency()
        self.started_at = time.time()
        self._frame_times: deque[float] = deque(maxlen=FPS_WINDOW)
        self.database_set_aside: str | None = None  # where a corrupt results database was moved this run

    def add_frame(self, result: FrameResult, now: float) -> None:
        counters = self.counters
        counters.frames += 1
        counters.cells += result.new_cells
        counters.views += result.views
        counters.open_cells = result.open_cells
        self.add_closed(result.closed, result.open_cells)
        self.latency.add(result.timings_ms)
        self._frame_times.append(now)

    def add_closed(self, closed: list[ClosedCell], still_open: int = 0) -> None:
        """Count the cells whose tracks ended (with a frame, or all of them when the run stops)."""
        counters = self.counters
        counters.open_cells = still_open
        counters.closed_cells += len(closed)
        counters.positives += sum(cell.positive for cell in closed)
        counters.clusters += sum(cell.cluster for cell in closed)

    def fps(self) -> float:
        window = self._frame_times
        if len(window) < 2 or window[-1] == window[0]:
            return 0.0
        return (len(window) - 1) / (window[-1] - window[0])

    def summary_line(self, run_id: int | None) -> str:
        c = self.counters
        total = self.latency.summary().get("total", {})
        latency = f"p50/p99 {total['p50_ms']:.1f}/{total['p99_ms']:.1f} ms" if total else "no latency yet"
        return (
            f"summary: run {run_id}, {c.frames} frames ({self.fps():.1f} fps), {c.cells} cells ({c.open_cells} open), "
            f"{c.views} views, {c.positives} positive and {c.clusters} clusters of {c.closed_cells} closed cells, "
            f"{c.dropped} dropped, {c.over_budget} over budget, "
            f"{c.bad_frames} bad, {c.source_failures} capture failures, {c.unsaved_frames} unsaved"
            + (f", {c.skipped_files} files skipped" if c.skipped_files else "")
            + f"; {latency}"
            + (f"; corrupt database set aside as {self.database_set_aside}" if self.database_set_aside else "")
        )

    def status(self, state: str, **facts: Any) -> dict[str, Any]:
        """status.json's content: ``facts`` (run, model, source...) plus the live figures."""
        return {
            "state": state,
            "pid": os.getpid(),
            **facts,
            "started_at": iso_utc(self.started_at),
            "updated_at": iso_utc(time.time()),
            "fps": round(self.fps(), 2),
            "counters": self.counters.as_dict(),
            "latency_ms": self.latency.summary(),
            "database_set_aside": self.database_set_aside,
        }
