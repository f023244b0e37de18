"""What `metascope bench pipeline` keeps of each frame, in memory that does not grow with the run:
exact counts, means and extremes, and percentiles from a fixed-size uniform sample of the frames
(a reservoir), so a 50,000-frame bench measures the service's memory, not its own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.records import STAGES, FrameResult

RESERVOIR_FRAMES = 4096  # frames whose figures are kept for percentiles (exact up to this many frames)
RSS_SAMPLES = 256  # resident-memory readings kept; past this, every other one goes and the interval doubles


def resident_mb() -> float:
    """This process's resident set size in MB (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


class Reservoir:
    """A uniform sample of up to ``size`` rows of ``width`` values (Vitter's algorithm R), with
    each column's exact count, sum, minimum and maximum."""

    def __init__(self, width: int, size: int = RESERVOIR_FRAMES, seed: int = 0):
        self.rows = np.zeros((size, width), dtype=np.float64)
        self.count = 0
        self.total = np.zeros(width)
        self.low = np.full(width, np.inf)
        self.high = np.full(width, -np.inf)
        self._rng = np.random.default_rng(seed)

    def add(self, row: np.ndarray) -> None:
        self.count += 1
        self.total += row
        np.minimum(self.low, row, out=self.low)
        np.maximum(self.high, row, out=self.high)
        size = len(self.rows)
        slot = self.count - 1 if self.count <= size else int(self._rng.integers(0, self.count))
        if slot < size:
            self.rows[slot] = row

    def column(self, index: int) -> np.ndarray:
        return self.rows[: min(self.count, len(self.rows)), index]

    def summary_ms(self, index: int) -> dict[str, float]:
        """Column ``index`` (seconds) as bench JSON: n, p50, p99 (from the sample), mean and max (exact), in ms."""
        sample = self.column(index) * 1000.0
        return {
            "n": self.count,
            "p50_ms": round(float(np.percentile(sample, 50)), 4),
            "p99_ms": round(float(np.percentile(sample, 99)), 4),
            "mean_ms": round(float(self.total[index] / self.count) * 1000.0, 4),
            "max_ms": round(float(self.high[index]) * 1000.0, 4),
        }


class PipelineSamples:
    """Each measured frame's stage timings, detections and views, and the resident memory every
    ``rss_every`` frames; the first ``warmup`` frames are seen but not kept. Fixed in size, so the
    benchmark's own bookkeeping neither grows with the run nor shows up as the service growing."""

    def __init__(self, frames: int, warmup: int, rss_every: int):
        self.warmup, self.rss_every = warmup, rss_every
        self.sample = Reservoir(len(STAGES) + 2)  # the stages (s), then cells and views
        self.rss: list[tuple[int, float]] = []
        self.rss_max = 0.0
        self.seen = 0

    def observe(self, result: FrameResult) -> None:
        """The service's observer: called with each frame's result."""
        self.seen += 1
        measured = self.seen - self.warmup
        if measured <= 0:
            return
        row = [result.timings_ms[stage] / 1000.0 for stage in STAGES]
        self.sample.add(np.array([*row, len(result.detections), result.views], dtype=np.float64))
        if self.rss_every and (measured == 1 or measured % self.rss_every == 0):
            self.rss.append((measured, round(resident_mb(), 1)))
            self.rss_max = max(self.rss_max, self.rss[-1][1])
            if len(self.rss) > RSS_SAMPLES:
                self.rss, self.rss_every = self.rss[:1] + self.rss[2::2], self.rss_every * 2

    def per_frame(self) -> dict[str, Any]:
        sample, cells, views = self.sample, len(STAGES), len(STAGES) + 1
        return {
            "cells_per_frame": {
                "mean": round(float(sample.total[cells] / sample.count), 2),
                "min": int(sample.low[cells]),
                "max": int(sample.high[cells]),
            },
            "views_per_frame": {
                "mean": round(float(sample.total[views] / sample.count), 3),
                "p50": float(np.percentile(sample.column(views), 50)),
                "p99": float(np.percentile(sample.column(views), 99)),
                "max": int(sample.high[views]),
            },
        }

    def latency(self) -> dict[str, Any]:
        """End to end (the "total" stage) and each stage apart."""
        stages = {stage: self.sample.summary_ms(row) for row, stage in enumerate(STAGES)}
        return {"end_to_end": stages.pop("total"), "stages": stages}

    def memory(self) -> dict[str, Any]:
        if not self.rss:
            return {}
        return {
            "resident_mb": {
                "start": self.rss[0][1],
                "end": self.rss[-1][1],
                "max": self.rss_max,
                "samples": [{"frame": frame, "mb": value} for frame, value in self.rss],
            }
        }
