"""Cells, not observations (issue 14): on a still field the model runs only for the views each
cell is still owed, each cell is stored once in `cells` with its averaged call, a stage move
starts new cells, and a run that ended uncleanly loses no cell."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fakes import make_config

from edge.capture import open_source
from edge.cells.logits import mean_of_logits
from edge.classify.classifier import Classifier
from edge.config import TrackingConfig
from edge.notify import Notifier
from edge.record.recovery import RECOVERED
from edge.record.store import ResultStore
from edge.service.loop import EXIT_OK, Service

K = TrackingConfig().views_per_cell  # the documented defaults, not numbers of this test's own
INTERVAL = TrackingConfig().view_interval_frames


class CountingClassifier:
    """The classifier, counting the cells each predict() call hands the model."""

    def __init__(self, inner: Classifier):
        self.inner = inner
        self.calls_per_frame: list[int] = []

    def predict(self, batch: np.ndarray, check: bool = True) -> np.ndarray:
        self.calls_per_frame.append(len(batch))
        return self.inner.predict(batch, check)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


UNHURRIED = {"budget_ms": 60_000.0}


def run_still_field(classifier: Classifier, tmp_path: Path, frames: int, **source) -> tuple[Service, list]:
    # A budget no frame reaches: what is tested is which views are owed, not this machine's speed
    # (under load, frames over the default budget deferred views past the frames checked).
    config = make_config(tmp_path, source={"kind": "still", "synthetic_cells": 20, **source}, pipeline=UNHURRIED)
    results: list = []
    service = Service(config, classifier, open_source(config), max_frames=frames, notifier=Notifier(address=""),
                      observer=results.append)  # fmt: skip
    assert service.run() == EXIT_OK
    return service, results


def rows(database: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute(sql).fetchall()


def test_on_a_still_field_the_model_runs_only_for_views_still_owed(classifier, tmp_path: Path) -> None:
    counting = CountingClassifier(classifier)
    frames = 2 * K * INTERVAL + 10
    service, results = run_still_field(counting, tmp_path, frames)
    cells = len(results[0].detections)
    assert cells >= 15, "the still field shows its cells"
    assert all(len(result.detections) == cells for result in results), "the same cells in every frame"
    model_calls = sum(counting.calls_per_frame)
    assert [result.views for result in results if result.views] == [n for n in counting.calls_per_frame if n]
    assert results[0].views == cells, "every new cell is classified in its first frame"
    assert model_calls == cells * K, "each cell gets exactly K views, then the model leaves it alone"
    assert all(result.views == 0 for result in results[K * INTERVAL + 5 :])
    database = service.config.database_path
    assert rows(database, "SELECT count(*) FROM views") == [(model_calls,)], "one cells row per model call"
    tracks = rows(database, "SELECT track, frames_seen, views, probability, end_reason FROM cells ORDER BY track")
    assert [track for track, *_ in tracks] == list(range(1, cells + 1)), "each cell once"
    assert all(seen == frames and views == K and end == "run stopped" for _, seen, views, _, end in tracks)
    for track, _, _, probability, _ in tracks:
        views = [p for (p,) in rows(database, f"SELECT probability FROM views WHERE track = {track}")]
        assert probability == pytest.approx(mean_of_logits(views), abs=1e-5), "the averaged call"
    c = service.counters
    assert (c.cells, c.views, c.closed_cells, c.open_cells) == (cells, model_calls, cells, 0)
    assert f"{cells} cells (0 open), {model_calls} views" in service.summary_line()


def test_a_frame_budget_too_small_for_more_views_still_classifies_every_new_cell(classifier, tmp_path: Path) -> None:
    """First views run whatever the budget; the views still owed wait for frames with time to
    spare and are never queued: with none to spare each cell keeps its one view."""
    config = make_config(tmp_path, source={"kind": "still", "synthetic_cells": 10}, pipeline={"budget_ms": 1.0})
    results: list = []
    service = Service(config, classifier, open_source(config), max_frames=12, notifier=Notifier(address=""),
                      observer=results.append)  # fmt: skip
    assert service.run() == EXIT_OK
    assert results[0].views == len(results[0].detections) > 0
    assert all(result.views == 0 for result in results[1:])
    assert rows(config.database_path, "SELECT DISTINCT views FROM cells") == [(1,)]


def test_a_stage_move_ends_the_cells_and_starts_new_ones(classifier, tmp_path: Path) -> None:
    service, results = run_still_field(classifier, tmp_path, 3 * 12, still_move_every=12)
    assert [result.new_field for result in results].count(True) == 2
    per_field = [len(results[0].detections), len(results[12].detections), len(results[24].detections)]
    stored = rows(service.config.database_path, "SELECT field, count(*), group_concat(DISTINCT end_reason) FROM cells"
                  " GROUP BY field ORDER BY field")  # fmt: skip
    assert stored == [(0, per_field[0], "new field"), (1, per_field[1], "new field"), (2, per_field[2], "run stopped")]
    assert rows(service.config.database_path, "SELECT DISTINCT field FROM frames ORDER BY field") == [(0,), (1,), (2,)]


def test_a_dividing_cell_is_classified_again_and_its_daughter_is_a_new_cell(classifier, tmp_path: Path) -> None:
    """The mother's track follows one daughter (half its area: classified again once the change
    has lasted) and the other daughter starts a cell of its own."""
    config = make_config(tmp_path, source={"kind": "still", "synthetic_cells": 12, "still_divide_every": 15},
                         tracking={"max_match_px": 30.0})  # fmt: skip
    results: list = []
    service = Service(config, classifier, open_source(config), max_frames=40, notifier=Notifier(address=""),
                      observer=results.append)  # fmt: skip
    assert service.run() == EXIT_OK
    divisions = 2  # at frames 15 and 30
    assert len(results[-1].detections) == len(results[0].detections) + divisions
    assert service.counters.cells == len(results[0].detections) + divisions
    again = rows(config.database_path, "SELECT track, views FROM cells WHERE reclassified = 1")
    assert len(again) == divisions and all(views >= 1 for _, views in again)
    for track, _ in again:  # its views started again: a second view 0
        assert rows(config.database_path, f"SELECT count(*) FROM views WHERE track = {track} AND view = 0") == [(2,)]


def test_the_database_grows_with_cells_not_frames_times_cells(classifier, tmp_path: Path) -> None:
    short, _ = run_still_field(classifier, tmp_path / "short", 40)
    long, _ = run_still_field(classifier, tmp_path / "long", 120)
    count = "SELECT (SELECT count(*) FROM views), (SELECT count(*) FROM cells)"
    assert rows(short.config.database_path, count) == rows(long.config.database_path, count)


def test_cells_open_at_an_unclean_stop_are_closed_from_their_views_at_the_next_start(tmp_path: Path) -> None:
    from test_store_export import run_info, view

    from edge.capture.base import Frame
    from edge.records import DetectionResult, FrameResult

    path = tmp_path / "metascope.db"
    store = ResultStore(path)
    store.start_run(run_info())  # threshold 0.5

    def frame(index: int, *views: DetectionResult) -> FrameResult:
        pixels = np.zeros((48, 64), dtype=np.uint8)
        return FrameResult(Frame(pixels, 1_700_000_000.0 + index, index), list(views), views=len(views), field_number=1)

    def again(cell: DetectionResult, number: int, probability: float) -> DetectionResult:
        from dataclasses import replace

        return replace(cell, view=number, view_probability=probability, view_label="b" if probability >= 0.5 else "a")

    first, second = view(1), view(2)  # tracks 2 and 3
    store.add_frame(frame(0, again(first, 0, 0.9), again(second, 0, 0.3)))
    store.add_frame(frame(1, again(first, 1, 0.7), again(second, 1, 0.4)))
    store.add_frame(frame(2, again(second, 0, 0.8)))  # track 3 changed: its views started again
    store.commit()
    store._db.close()  # killed: no end_run, the open cells never written
    reopened = ResultStore(path)
    assert reopened.close_unfinished_runs() == [(1, 3, 2)]
    reopened.commit()
    reopened.close()
    stored = rows(path, "SELECT track, field, views, probability, label, frames_seen, reclassified, end_reason"
                  " FROM cells ORDER BY track")  # fmt: skip
    assert stored == [
        (2, 1, 2, pytest.approx(mean_of_logits([0.9, 0.7]), abs=1e-6), "b", 2, 0, RECOVERED),
        (3, 1, 1, pytest.approx(0.8, abs=1e-6), "b", 3, 1, RECOVERED),
    ]
    assert rows(path, "SELECT cells FROM runs") == [(2,)]


def test_a_cell_whose_row_went_with_a_failed_batch_is_closed_from_its_views_at_the_end(tmp_path: Path) -> None:
    from test_store_export import fake_result, run_info

    store = ResultStore(tmp_path / "metascope.db")
    store.start_run(run_info())
    first = fake_result(1_700_000_000.0)  # views of cells 1-3; closes cell 1
    first.closed = []
    store.add_frame(first)
    store.commit()
    store.add_frame(fake_result(1_700_000_001.0))  # cell 1's row and more views...
    store.rollback()  # ...lost with a batch that could not be committed
    store.end_run("stopped")
    store.close()
    stored = rows(tmp_path / "metascope.db", "SELECT track, views, end_reason FROM cells ORDER BY track")
    assert [(track, views) for track, views, _ in stored] == [(1, 1), (2, 1), (3, 1)]
    assert all(reason == RECOVERED for *_, reason in stored)
    assert rows(tmp_path / "metascope.db", "SELECT cells FROM runs") == [(3,)]
