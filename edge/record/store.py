"""The results database: SQLite in WAL mode under the state directory, written by the service.

Tables ``runs``, ``frames``, ``views`` (one row per view: one model call on one tracked cell) and
``cells`` (one row per tracked cell, written when it closes), each keyed by ``id INTEGER PRIMARY
KEY AUTOINCREMENT``, so ids are never reused, even after retention deletes the oldest rows:
`metascope export --after-id N` (deploy/pull.sh) relies on that. Times are ISO 8601 UTC text
with a fixed width (edge/record/times.py), so they sort and compare as strings.

Durability: WAL with synchronous=NORMAL. A crashed or killed process loses nothing that was
committed, and a power cut never corrupts the database (WAL keeps it consistent); a power cut
may lose the last commits not yet checkpointed, about a second of results. FULL would fsync
on every commit: on an SD card that is tens of milliseconds inside the frame loop and extra
wear, for that last second. Commits are batched (at most one per ``commit_interval_s``, and
at shutdown).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.record import recovery
from edge.record.opening import failure, open_for_writing
from edge.record.retention import RetentionSteps
from edge.record.times import iso_utc
from edge.records import ClosedCell, FrameResult

_INSERT_FRAME = (
    "INSERT INTO frames (run_id, captured_at, frame_index, width, height, detections, positives, clusters,"
    " dropped_before, capture_wait_ms, detect_ms, preprocess_ms, infer_ms, over_budget, snapshot, views, field)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_VIEW = (
    "INSERT INTO views (frame_id, run_id, captured_at, label, probability, cluster, area_px, centroid_x,"
    " centroid_y, bbox_x0, bbox_y0, bbox_x1, bbox_y1, track, view, orientation)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CELL = (
    "INSERT INTO cells (run_id, track, field, first_seen_at, last_seen_at, frames_seen, views, probability,"
    " label, cluster, area_px, centroid_x, centroid_y, reclassified, end_reason, crop)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class RunInfo:
    model_name: str
    model_sha256: str
    interpreter: str
    source: str
    mode: str
    threshold: float
    window_px: int
    config: dict[str, Any]


@dataclass
class Written:
    """Rows of one kind this run has written: in all, and in the batch not yet committed."""

    frames: int = 0
    views: int = 0
    cells: int = 0

    def add(self, other: Written, sign: int = 1) -> None:
        self.frames += sign * other.frames
        self.views += sign * other.views
        self.cells += sign * other.cells


def _frame_row(run_id: int, result: FrameResult, snapshot: str | None) -> tuple[Any, ...]:
    frame, timings = result.frame, result.timings_ms
    height, width = frame.pixels.shape
    return (run_id, iso_utc(frame.captured_at), frame.index, width, height, len(result.detections), result.positives,
            result.clusters, frame.dropped_before, *(_rounded(timings.get(stage)) for stage in
            ("capture_wait", "detect", "preprocess", "infer")), int(result.over_budget), snapshot, result.views,
            result.field_number)  # fmt: skip


def _view_rows(frame_id: int, run_id: int, result: FrameResult) -> list[tuple[Any, ...]]:
    captured_at = iso_utc(result.frame.captured_at)
    return [(frame_id, run_id, captured_at, seen.view_label, round(seen.view_probability, 6), int(seen.cluster),
             seen.area, round(seen.centroid_yx[1], 2), round(seen.centroid_yx[0], 2), seen.bbox[1], seen.bbox[0],
             seen.bbox[3], seen.bbox[2], seen.track, seen.view, seen.orientation)
            for seen in result.viewed]  # fmt: skip


def _cell_row(run_id: int, cell: ClosedCell) -> tuple[Any, ...]:
    probability = None if cell.probability is None else round(cell.probability, 6)
    return (run_id, cell.track, cell.field, iso_utc(cell.first_seen_at), iso_utc(cell.last_seen_at), cell.frames_seen,
            cell.views, probability, cell.label, int(cell.cluster), cell.area, round(cell.centroid_yx[1], 2),
            round(cell.centroid_yx[0], 2), cell.reclassified, cell.end, cell.crop)  # fmt: skip


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class ResultStore:
    """Writes results from the service loop (one thread). Rows are inserted at once and
    committed in batches by ``maybe_commit``/``commit``."""

    def __init__(self, path: str | os.PathLike[str], commit_interval_s: float = 1.0, max_db_mb: float = 0.0):
        self.path = Path(path)
        self.commit_interval_s = commit_interval_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Checks, set-aside and refusals: edge/record/opening.py.
        self._db, self.set_aside = open_for_writing(self.path, max_db_mb)
        try:
            self.database_id = self._db.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()[0]
        except sqlite3.Error as exc:
            self._db.close()
            raise failure(exc, self.path) from exc
        self._in_transaction = False
        self._last_commit = time.monotonic()
        self.commits = 0  # batches committed (retention looks at the size after each)
        self.run_id: int | None = None
        self.written = Written()  # by this run
        self.pending = Written()  # of those, not yet committed
        # Frames of rolled-back batches, until the service counts them unsaved and zeroes this:
        # commit() rolls its batch back itself before it raises, so ``pending`` is empty by then.
        self.dropped_frames = 0
        self.retention = RetentionSteps(self._db, self.path)  # over_size() is cheap enough for every commit

    # ---------------------------------------------------------------- runs
    def start_run(self, info: RunInfo, started_at: float | None = None) -> int:
        cursor = self._db.execute(
            "INSERT INTO runs (started_at, host, software_version, model_name, model_sha256, interpreter, source,"
            " mode, threshold, window_px, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (iso_utc(time.time() if started_at is None else started_at), socket.gethostname(), __version__,
             info.model_name, info.model_sha256, info.interpreter, info.source, info.mode, info.threshold,
             info.window_px, json.dumps(info.config, sort_keys=True)),
        )  # fmt: skip
        self.run_id = int(cursor.lastrowid)
        return self.run_id

    def close_unfinished_runs(self) -> list[tuple[int, int, int]]:
        """Close the runs that never stopped cleanly (edge/record/recovery.py)."""
        return recovery.close_unfinished_runs(self._db)

    def end_run(self, reason: str) -> None:
        """Close the run row and commit everything (the last write of a run). A cell whose row
        went with a batch that could not be committed (a full disk) while its views were stored
        before is closed from those views, as after a crash."""
        recovered = recovery.close_cells_from_views(self._db, self._begin())
        self.written.cells += recovered
        self.pending.cells += recovered
        self._db.execute(
            "UPDATE runs SET ended_at = ?, exit_reason = ?, frames = ?, views = ?, cells = ? WHERE id = ?",
            (iso_utc(time.time()), reason, self.written.frames, self.written.views, self.written.cells, self.run_id),
        )
        self.commit()

    # -------------------------------------------------------------- frames
    def add_frame(self, result: FrameResult, snapshot: str | None = None) -> int:
        """Insert one FrameResult (inside the current batch): the frame, a ``views`` row for each
        view the model took in it, and a ``cells`` row for each cell it closed. Detections the
        model did not look at in this frame are only counted in the frame's row. Returns the
        frame id."""
        run_id = self._begin()
        frame_id = int(self._db.execute(_INSERT_FRAME, _frame_row(run_id, result, snapshot)).lastrowid)
        views = _view_rows(frame_id, run_id, result)
        if views:
            self._db.executemany(_INSERT_VIEW, views)
        self.add_cells(result.closed)
        added = Written(frames=1, views=len(views))
        self.written.add(added)
        self.pending.add(added)
        return frame_id

    def add_cells(self, closed: Sequence[ClosedCell]) -> None:
        """A ``cells`` row for each closed cell, in the current batch."""
        if not closed:
            return
        run_id = self._begin()
        self._db.executemany(_INSERT_CELL, [_cell_row(run_id, cell) for cell in closed])
        self.written.cells += len(closed)
        self.pending.cells += len(closed)

    def mark_over_budget(self, frame_id: int) -> None:
        """The store stage itself pushed this frame over budget (rare; known only after its insert)."""
        self._begin()
        self._db.execute("UPDATE frames SET over_budget = 1 WHERE id = ?", (frame_id,))

    def set_snapshot(self, frame_id: int, name: str) -> None:
        self._begin()
        self._db.execute("UPDATE frames SET snapshot = ? WHERE id = ?", (name, frame_id))

    # ------------------------------------------------------------- commits
    def _begin(self) -> int:
        """Open the batch if none is open; the run's id (every write belongs to a run)."""
        if self.run_id is None:
            raise RuntimeError("start_run() first")
        if not self._in_transaction:
            self._db.execute("BEGIN")
            self._in_transaction = True
        return self.run_id

    def maybe_commit(self, now: float | None = None) -> bool:
        """Commit when the batch is at least ``commit_interval_s`` old; True when it committed."""
        now = time.monotonic() if now is None else now
        if self._in_transaction and now - self._last_commit >= self.commit_interval_s:
            self.commit()
            return True
        return False

    def commit(self) -> None:
        if self._in_transaction:
            try:
                if self.run_id is not None:  # the run's totals follow its commits
                    written = self.written
                    self._db.execute(
                        "UPDATE runs SET frames = ?, views = ?, cells = ?, updated_at = ? WHERE id = ?",
                        (written.frames, written.views, written.cells, iso_utc(time.time()), self.run_id),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self.rollback()
                raise
            self._in_transaction = False
            self.pending = Written()
            self.commits += 1
        self._last_commit = time.monotonic()

    def rollback(self) -> None:
        """Drop the uncommitted batch (after a write error such as a full disk)."""
        if self._in_transaction:
            # SQLite may already have rolled back on its own (SQLITE_FULL can).
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._in_transaction = False
        self.dropped_frames += self.pending.frames
        self.written.add(self.pending, sign=-1)
        self.pending = Written()

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()

    def close_quietly(self) -> None:
        """Close at the end of a run: what cannot be committed any more is logged by the
        caller already; closing never raises."""
        try:
            self.close()
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()

    # ----------------------------------------------------------- retention
    def retention_step(self, retention_days: float, max_db_mb: float, now: float | None = None) -> tuple[int, bool]:
        """One bounded piece of retention (edge/record/retention.py), after committing the
        batch. Returns (frames deleted, whether nothing is left to delete)."""
        self.commit()
        return self.retention.step(retention_days, max_db_mb, now)
