"""The results database: SQLite in WAL mode under the state directory.

Tables ``runs``, ``frames``, ``cells`` (one row per view: one model call on one tracked cell)
and ``tracks`` (one row per distinct cell, written when it closes), each keyed by ``id INTEGER PRIMARY KEY
AUTOINCREMENT``, so ids are never reused, even after retention deletes the oldest rows:
`metascope export --after-id N` (deploy/pull.sh) relies on that. Times are ISO 8601 UTC text
with a fixed width ("2025-01-31T12:00:00.000000Z"), so they sort and compare as strings.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge import __version__
from edge.cells.logits import mean_of_logits
from edge.errors import CommandError
from edge.record.schema import migrate

TIME_COLUMN = {"runs": "started_at", "frames": "captured_at", "cells": "captured_at", "tracks": "last_seen_at"}
REQUIRED_TABLES = ("runs", "frames", "cells")  # a database no metascope 0.2 has opened yet has no tracks
RECOVERED = "closed from its stored views (its own row was lost: an unclean stop or a failed write)"
RETENTION_BATCH_FRAMES = 5_000  # most frames one retention step deletes
RETENTION_STEP_S = 0.05  # a step that took longer deletes fewer frames next time (and faster ones more)
WAL_LIMIT_BYTES = 64 * 1024 * 1024
UNCLEAN_STOP = "did not stop cleanly (killed, crashed or powered off); closed at the next start"
SIZE_TARGET_FRACTION = 0.9  # after a size clean-up the data fills at most 90% of max_db_mb


class StoreError(CommandError):
    """The database cannot be opened or read; the message names the file."""


def iso_utc(seconds: float) -> str:
    """Epoch seconds as fixed-width ISO 8601 UTC: sorts and compares as text."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> str:
    """A user's ISO 8601 time (a date, or date and time; naive means UTC) in the stored form."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


class ResultStore:
    """Writes results from the service loop (one thread). Rows are inserted at once and
    committed in batches by ``maybe_commit``/``commit``."""

    def __init__(self, path: str | os.PathLike[str], commit_interval_s: float = 1.0):
        self.path = Path(path)
        self.commit_interval_s = commit_interval_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are begun and committed explicitly here.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                # Freed pages go back to the file system after retention (set before any table).
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # The WAL is truncated to this after checkpoints (a large retention grew it to 85 MB).
            self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            migrate(self._db)
            self.database_id = self._db.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()[0]
        except (sqlite3.Error, ValueError) as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()  # a store that failed to open (a full disk) is tried again later
            raise StoreError(f"{self.path}: cannot open the results database: {exc}") from exc
        self._in_transaction = False
        self._last_commit = time.monotonic()
        self.run_id: int | None = None
        self.pending_frames = self.pending_cells = self.pending_tracks = 0  # written but not yet committed
        self.frames_written = 0
        self.cells_written = 0  # views
        self.tracks_written = 0
        self._retention_batch = RETENTION_BATCH_FRAMES // 10

    # ---------------------------------------------------------------- runs
    def start_run(self, info: RunInfo, started_at: float | None = None) -> int:
        cursor = self._db.execute(
            "INSERT INTO runs (started_at, host, software_version, model_name, model_sha256, interpreter, source,"
            " mode, threshold, window_px, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                iso_utc(time.time() if started_at is None else started_at),
                socket.gethostname(),
                __version__,
                info.model_name,
                info.model_sha256,
                info.interpreter,
                info.source,
                info.mode,
                info.threshold,
                info.window_px,
                json.dumps(info.config, sort_keys=True),
            ),
        )
        self.run_id = int(cursor.lastrowid)
        return self.run_id

    def close_unfinished_runs(self) -> list[tuple[int, int, int]]:
        """Close the runs that never stopped cleanly (killed, crashed, powered off): their end is
        their last commit, their totals what they stored, and each cell they were still following
        becomes a track row made from its stored views. Returns (run id, frames, cells closed)."""
        open_runs = self._db.execute("SELECT id FROM runs WHERE ended_at IS NULL").fetchall()
        closed = []
        for (run_id,) in open_runs:
            recovered = self._close_tracks_from_views(run_id)
            frames = self._db.execute("SELECT count(*) FROM frames WHERE run_id = ?", (run_id,)).fetchone()[0]
            views = self._db.execute("SELECT count(*) FROM cells WHERE run_id = ?", (run_id,)).fetchone()[0]
            tracks = self._db.execute("SELECT count(*) FROM tracks WHERE run_id = ?", (run_id,)).fetchone()[0]
            self._db.execute(
                "UPDATE runs SET ended_at = coalesce(updated_at, started_at), exit_reason = ?, frames = ?, cells = ?,"
                " tracks = ? WHERE id = ?",
                (UNCLEAN_STOP, frames, views, tracks, run_id),
            )
            closed.append((int(run_id), int(frames), recovered))
        return closed

    def _close_tracks_from_views(self, run_id: int) -> int:
        """Write a track row for each cell of ``run_id`` that has stored views but no track row
        (it was open when the run ended uncleanly, or its row went with a batch that failed). Its
        call is the mean logit of the views since its views last started again (view 0); first
        and last seen and frames seen can only count the frames it was viewed in. Returns how
        many it wrote."""
        rows = self._db.execute(
            "SELECT c.track, c.view, c.probability, c.label, c.captured_at, c.cluster, c.area_px, c.centroid_x,"
            " c.centroid_y, f.field FROM cells c LEFT JOIN frames f ON f.id = c.frame_id"
            " WHERE c.run_id = ? AND c.track IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM tracks t WHERE t.run_id = c.run_id AND t.track = c.track)"
            " ORDER BY c.track, c.id",
            (run_id,),
        ).fetchall()
        threshold = self._db.execute("SELECT coalesce(threshold, 0.5) FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        by_track: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_track.setdefault(row[0], []).append(row)
        for track, views in by_track.items():
            starts = [index for index, view in enumerate(views) if view[1] == 0]
            series = views[starts[-1] :] if starts else views
            probability = mean_of_logits(view[2] for view in series)
            positive = probability >= threshold
            # The mean lies between the views' logits, so a view on its side of the threshold
            # exists and names the label (the run does not record the labels themselves).
            label = next((view[3] for view in series if (view[2] >= threshold) == positive), series[-1][3])
            last = views[-1]
            self._db.execute(
                "INSERT INTO tracks (run_id, track, field, first_seen_at, last_seen_at, frames_seen, views,"
                " probability, label, cluster, area_px, centroid_x, centroid_y, reclassified, end_reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, track, last[9] or 0, views[0][4], last[4], len({view[4] for view in views}), len(series),
                 round(probability, 6), label, last[5], last[6], last[7], last[8], max(len(starts) - 1, 0),
                 RECOVERED),
            )  # fmt: skip
        return len(by_track)

    def end_run(self, reason: str) -> None:
        """Close the run row and commit everything (the last write of a run). A cell whose row
        went with a batch that could not be committed (a full disk) while its views were stored
        before is closed from those views, as after a crash."""
        self._begin()
        recovered = self._close_tracks_from_views(self.run_id)
        self.pending_tracks += recovered
        self.tracks_written += recovered
        self._db.execute(
            "UPDATE runs SET ended_at = ?, exit_reason = ?, frames = ?, cells = ?, tracks = ? WHERE id = ?",
            (iso_utc(time.time()), reason, self.frames_written, self.cells_written, self.tracks_written, self.run_id),
        )
        self.commit()

    # -------------------------------------------------------------- frames
    def add_frame(self, result: Any, snapshot: str | None = None) -> int:
        """Insert one FrameResult (inside the current batch): the frame, a ``cells`` row for each
        view the model took in it, and a ``tracks`` row for each cell it closed. Detections the
        model did not look at in this frame are only counted in the frame's row. Returns the
        frame id."""
        if self.run_id is None:
            raise RuntimeError("start_run() first")
        self._begin()
        frame = result.frame
        timings = result.timings_ms
        captured_at = iso_utc(frame.captured_at)
        height, width = frame.pixels.shape
        cursor = self._db.execute(
            "INSERT INTO frames (run_id, captured_at, frame_index, width, height, cells, positives, clusters,"
            " dropped_before, capture_wait_ms, detect_ms, preprocess_ms, infer_ms, over_budget, snapshot, views,"
            " field) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.run_id,
                captured_at,
                frame.index,
                width,
                height,
                len(result.cells),
                result.positives,
                result.clusters,
                frame.dropped_before,
                _rounded(timings.get("capture_wait")),
                _rounded(timings.get("detect")),
                _rounded(timings.get("preprocess")),
                _rounded(timings.get("infer")),
                int(result.over_budget),
                snapshot,
                result.views,
                result.field_number,
            ),
        )
        frame_id = int(cursor.lastrowid)
        viewed = result.viewed
        if viewed:
            self._db.executemany(
                "INSERT INTO cells (frame_id, run_id, captured_at, label, probability, cluster, area_px, centroid_x,"
                " centroid_y, bbox_x0, bbox_y0, bbox_x1, bbox_y1, track, view, orientation)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        frame_id,
                        self.run_id,
                        captured_at,
                        cell.view_label,
                        round(cell.view_probability, 6),
                        int(cell.cluster),
                        cell.area,
                        round(cell.centroid_yx[1], 2),
                        round(cell.centroid_yx[0], 2),
                        cell.bbox[1],
                        cell.bbox[0],
                        cell.bbox[3],
                        cell.bbox[2],
                        cell.track,
                        cell.view,
                        cell.orientation,
                    )
                    for cell in viewed
                ],
            )
        self.add_tracks(result.closed)
        self.pending_frames += 1
        self.pending_cells += len(viewed)
        self.frames_written += 1
        self.cells_written += len(viewed)
        return frame_id

    def add_tracks(self, closed: Sequence[Any]) -> None:
        """A ``tracks`` row for each closed cell (edge.service.pipeline.ClosedCell), in the current batch."""
        if not closed:
            return
        if self.run_id is None:
            raise RuntimeError("start_run() first")
        self._begin()
        self._db.executemany(
            "INSERT INTO tracks (run_id, track, field, first_seen_at, last_seen_at, frames_seen, views, probability,"
            " label, cluster, area_px, centroid_x, centroid_y, reclassified, end_reason, crop)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    self.run_id,
                    cell.track,
                    cell.field,
                    iso_utc(cell.first_seen_at),
                    iso_utc(cell.last_seen_at),
                    cell.frames_seen,
                    cell.views,
                    None if cell.probability is None else round(cell.probability, 6),
                    cell.label,
                    int(cell.cluster),
                    cell.area,
                    round(cell.centroid_yx[1], 2),
                    round(cell.centroid_yx[0], 2),
                    cell.reclassified,
                    cell.end,
                    cell.crop,
                )
                for cell in closed
            ],
        )
        self.pending_tracks += len(closed)
        self.tracks_written += len(closed)

    def mark_over_budget(self, frame_id: int) -> None:
        """The store stage itself pushed this frame over budget (rare; known only after its insert)."""
        self._begin()
        self._db.execute("UPDATE frames SET over_budget = 1 WHERE id = ?", (frame_id,))

    def set_snapshot(self, frame_id: int, name: str) -> None:
        self._begin()
        self._db.execute("UPDATE frames SET snapshot = ? WHERE id = ?", (name, frame_id))

    # ------------------------------------------------------------- commits
    def _begin(self) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN")
            self._in_transaction = True

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
                    self._db.execute(
                        "UPDATE runs SET frames = ?, cells = ?, tracks = ?, updated_at = ? WHERE id = ?",
                        (self.frames_written, self.cells_written, self.tracks_written, iso_utc(time.time()),
                         self.run_id),
                    )  # fmt: skip
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self.rollback()
                raise
            self._in_transaction = False
            self.pending_frames = self.pending_cells = self.pending_tracks = 0
        self._last_commit = time.monotonic()

    def rollback(self) -> None:
        """Drop the uncommitted batch (after a write error such as a full disk)."""
        if self._in_transaction:
            # SQLite may already have rolled back on its own (SQLITE_FULL can).
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._in_transaction = False
        self.frames_written -= self.pending_frames
        self.cells_written -= self.pending_cells
        self.tracks_written -= self.pending_tracks
        self.pending_frames = self.pending_cells = self.pending_tracks = 0

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
    def checkpoint(self) -> None:
        """Move the write-ahead log into the database file and truncate the log."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def used_bytes(self) -> int:
        """Bytes the data occupies: the file minus its free pages (which SQLite reuses), plus
        the write-ahead log, which holds data too until a checkpoint."""
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        wal = Path(f"{self.path}-wal")
        return int((pages - free) * page_size) + (wal.stat().st_size if wal.exists() else 0)

    def apply_retention(self, retention_days: float, max_db_mb: float, now: float | None = None) -> int:
        """Delete frames (and their cells) older than ``retention_days``, then the oldest frames
        until the data fits ``max_db_mb``. Commits; returns the number of frames deleted.
        Freed pages are reused by new rows, so the file stops growing at about the cap."""
        deleted = 0
        while True:
            step, done = self.retention_step(retention_days, max_db_mb, now)
            deleted += step
            if done:
                return deleted

    def retention_step(self, retention_days: float, max_db_mb: float, now: float | None = None) -> tuple[int, bool]:
        """One bounded piece of ``apply_retention``, so the service loop can spread a big
        clean-up over many frames: the batch adapts so that a step takes about
        RETENTION_STEP_S (at most RETENTION_BATCH_FRAMES frames). Returns (frames deleted,
        whether nothing is left to delete)."""
        started = time.monotonic()
        self.commit()
        last = self._retention_target(retention_days, max_db_mb, now)
        if last is None:
            self._db.execute("PRAGMA incremental_vacuum")  # give freed pages back (new databases)
            return 0, True
        deleted = self._delete_frames_through(last)
        took = time.monotonic() - started
        if took > RETENTION_STEP_S:
            self._retention_batch = max(10, self._retention_batch // 2)
        elif took < RETENTION_STEP_S / 4:
            self._retention_batch = min(RETENTION_BATCH_FRAMES, self._retention_batch * 2)
        return deleted, False

    def _retention_target(self, retention_days: float, max_db_mb: float, now: float | None) -> int | None:
        """The last frame id of the next batch to delete, or None when nothing is due."""
        batch = self._retention_batch
        if retention_days > 0:
            cutoff = iso_utc((time.time() if now is None else now) - retention_days * 86_400)
            last = self._db.execute(
                "SELECT max(id) FROM (SELECT id FROM frames WHERE captured_at < ? ORDER BY id LIMIT ?)",
                (cutoff, batch),
            ).fetchone()[0]
            if last is not None:
                return int(last)
            # Cells (tracks) go by when they were last seen; one row per cell, far fewer than frames.
            self._db.execute("DELETE FROM tracks WHERE last_seen_at < ?", (cutoff,))
            self._db.execute("DELETE FROM runs WHERE ended_at IS NOT NULL AND ended_at < ?", (cutoff,))
        if max_db_mb > 0:
            limit = max_db_mb * 1024 * 1024
            if self.used_bytes() > limit:
                # Deletions go to the WAL first: move them into the file (and truncate the WAL)
                # before measuring, or every step would find the data bigger, not smaller.
                self.checkpoint()
            used = self.used_bytes()
            total = self._db.execute("SELECT count(*) FROM frames").fetchone()[0] if used > limit else 0
            if total:
                share = 1.0 - SIZE_TARGET_FRACTION * limit / used
                count = min(max(1, int(total * share)), batch)
                return int(
                    self._db.execute(
                        "SELECT max(id) FROM (SELECT id FROM frames ORDER BY id LIMIT ?)", (count,)
                    ).fetchone()[0]
                )
        return None

    def _delete_frames_through(self, last_frame_id: int) -> int:
        self._db.execute("BEGIN")
        try:
            self._db.execute("DELETE FROM cells WHERE frame_id <= ?", (last_frame_id,))
            count = self._db.execute("DELETE FROM frames WHERE id <= ?", (last_frame_id,)).rowcount
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise
        return count


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------- reading
def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open the database for reading without ever creating or changing it."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no results database (has `metascope run` run with this state_dir?)")
    uri = path.resolve().as_uri()
    try:
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=10.0)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.OperationalError:
            # A WAL database whose writer has closed cleanly has no -wal/-shm files, and a
            # reader who may not create them (another user than the service's, e.g. over ssh)
            # cannot open it read-only. With no -wal there is nothing unmerged and no writer:
            # the file can be read as immutable.
            if Path(f"{path}-wal").exists():
                raise
            db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=10.0)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the results database: {exc}") from exc
    missing = [table for table in REQUIRED_TABLES if table not in tables]
    if missing:
        db.close()
        raise StoreError(f"{path}: not a metascope results database (no {', '.join(missing)} table)")
    return db


def select_rows(
    db: sqlite3.Connection,
    table: str,
    since: str | None = None,
    until: str | None = None,
    after_id: int | None = None,
) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Column names and a row iterator for one table, ordered by id (one read snapshot)."""
    if table not in TIME_COLUMN:
        raise ValueError(f"unknown table {table!r}")
    clauses, params = [], []
    if after_id is not None:
        clauses.append("id > ?")
        params.append(after_id)
    if since is not None:
        clauses.append(f"{TIME_COLUMN[table]} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{TIME_COLUMN[table]} < ?")
        params.append(until)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = db.execute(f"SELECT * FROM {table}{where} ORDER BY id", params)
    columns = [description[0] for description in cursor.description]
    return columns, iter(cursor)
