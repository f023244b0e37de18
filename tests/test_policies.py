"""The service loop's decisions, each alone: failure streaks, periodic jobs, the disk guard and
retention spread over the loop's turns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from edge.capture.base import Frame
from edge.record.retention import RETENTION_BATCH_FRAMES
from edge.record.store import ResultStore, RunInfo
from edge.records import ClosedCell, DetectionResult, FrameResult
from edge.service.policies import DiskGuard, Every, FailureStreak, Retention
from edge.service.run_stats import RunStats


def test_a_failure_streak_ends_at_its_limit_and_a_success_resets_it() -> None:
    streak = FailureStreak(3)
    assert [streak.failed(), streak.failed()] == [False, False]
    streak.succeeded()
    assert [streak.failed(), streak.failed(), streak.failed()] == [False, False, True]
    assert streak.count == 3


def test_every_is_due_once_per_interval() -> None:
    timer = Every(10.0, first_after_s=5.0, now=100.0)
    moments = (100.0, 104.9, 105.0, 106.0, 114.9, 115.0)
    assert [timer.due(t) for t in moments] == [False, False, True, False, False, True]


def test_the_disk_guard_looks_at_most_once_per_interval_and_reports_low_space() -> None:
    free = {"bytes": 500 * 1024 * 1024}
    looks, lows = [], []

    def free_space(path: Path) -> int:
        looks.append(path)
        return free["bytes"]

    guard = DiskGuard(Path("/state"), 100.0, free_space, lows.append, interval_s=1.0)
    assert guard.allows_writing(0.0) and guard.allows_writing(0.5) and len(looks) == 1
    free["bytes"] = 50 * 1024 * 1024
    assert guard.allows_writing(0.9), "not looked at again within the interval"
    assert not guard.allows_writing(1.0) and lows == [50 * 1024 * 1024]
    free["bytes"] = 200 * 1024 * 1024
    assert guard.allows_writing(2.0) and len(lows) == 1


def frame_result(index: int, cells: int = 2) -> FrameResult:
    cell = DetectionResult((0, 0, 4, 4), (2.0, 2.0), 16, False, 0.7, "b", True)
    result = FrameResult(Frame(np.zeros((8, 8), np.uint8), captured_at=float(index), index=index), [cell] * cells)
    result.timings_ms = {"detect": 1.0, "preprocess": 1.0, "infer": 1.0, "store": 0.1, "total": 3.1}
    return result


def test_retention_spreads_a_large_clean_up_over_many_turns(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db", commit_interval_s=0.0)
    store.start_run(RunInfo("m", "0" * 64, "i", "s", "cells", 0.5, 192, {}), started_at=0.0)
    old = RETENTION_BATCH_FRAMES * 2 + 10
    for index in range(old):
        store.add_frame(frame_result(index, cells=1))
    store.commit()
    retention = Retention(retention_days=1.0, max_db_mb=0.0, on_error=lambda exc: None, interval_s=600.0)
    passes = [retention.step(store, float(turn) / 1000) for turn in range(200)]
    # Bounded steps, one per loop turn, delete the old frames; the pass reports once, at its end.
    reports = [total for total in passes if total is not None]
    assert reports == [old] and passes.index(old) >= 3
    assert retention.step(store, 4.0) is None, "the next pass waits for its interval"
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert db.execute("SELECT count(*) FROM frames").fetchone()[0] == 0


def closed_cell(positive: bool, cluster: bool) -> ClosedCell:
    probability = 0.8 if positive else 0.2
    return ClosedCell(1, 0, 0.0, 1.0, 2, 2, probability, "b", cluster, 16, (2.0, 2.0), 0, "lost", positive=positive)


def test_run_stats_count_cells_views_and_closed_calls_and_report_latency_and_fps() -> None:
    """Cells are distinct cells (tracks), views model calls; positives and clusters are counted
    among the closed cells, by their final call."""
    stats = RunStats()
    for index in range(11):
        result = frame_result(index, cells=3)
        result.new_cells, result.views, result.open_cells = (3, 3, 3) if index == 0 else (0, 1, 3)
        stats.add_frame(result, now=index * 0.5)
    assert stats.counters.open_cells == 3 and stats.counters.positives == 0
    stats.add_closed([closed_cell(True, False), closed_cell(True, True), closed_cell(False, False)])
    c = stats.counters
    assert (c.frames, c.cells, c.views, c.open_cells) == (11, 3, 13, 0)
    assert (c.closed_cells, c.positives, c.clusters) == (3, 2, 1)
    assert stats.fps() == 2.0
    status = stats.status("running", run_id=7)
    assert status["run_id"] == 7 and status["latency_ms"]["total"]["p50_ms"] == 3.1
    assert "11 frames (2.0 fps), 3 cells (0 open), 13 views, 2 positive and 1 clusters of 3 closed cells" in (
        stats.summary_line(7)
    )
