"""Keeping the results database within ``store.retention_days`` and ``store.max_db_mb``: the
oldest frames (with their views) go first, in bounded steps so the service loop can spread a big
clean-up over many frames. Freed pages are reused by new rows (and given back to the file system
in databases made with incremental vacuum), so the file stops growing at about the cap. The
write-ahead log counts against the cap too: it is checkpointed and cut back to a tenth of the cap
(``wal_limits``), so a small cap is not dwarfed by SQLite's default 4 MB log."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edge.record.times import iso_utc

RETENTION_BATCH_FRAMES = 5_000  # most frames one step deletes
RETENTION_STEP_S = 0.05  # a step that took longer deletes fewer frames next time (and faster ones more)
SIZE_TARGET_FRACTION = 0.9  # after a size clean-up the data fills at most 90% of its share of max_db_mb
WAL_FRACTION = 0.1  # the write-ahead log is checkpointed and truncated at about this share of max_db_mb
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # and never kept larger than this (a large retention grew it to 85 MB)
SQLITE_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
VACUUM_PAGES_PER_STEP = 2048  # free pages one step gives back to the file system (8 MB of 4 kB pages)
AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's value in databases made since it was set


def used_bytes(db: sqlite3.Connection, path: Path) -> int:
    """Bytes the data occupies: the file minus its free pages (which SQLite reuses), plus the
    write-ahead log, which holds data too until a checkpoint."""
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    wal = Path(f"{path}-wal")
    return int((pages - free) * page_size) + (wal.stat().st_size if wal.exists() else 0)


def wal_limits(max_db_mb: float, page_size: int) -> tuple[int, int]:
    """(wal_autocheckpoint pages, journal_size_limit bytes) that keep the write-ahead log within
    WAL_FRACTION of ``max_db_mb`` (0: no cap, SQLite's defaults and WAL_LIMIT_BYTES)."""
    if max_db_mb <= 0:
        return SQLITE_AUTOCHECKPOINT_PAGES, WAL_LIMIT_BYTES
    wal_bytes = int(max_db_mb * 1024 * 1024 * WAL_FRACTION)
    pages = min(SQLITE_AUTOCHECKPOINT_PAGES, max(1, wal_bytes // page_size))
    return pages, min(WAL_LIMIT_BYTES, wal_bytes)


def checkpoint(db: sqlite3.Connection) -> bool:
    """Move the write-ahead log into the database file and truncate the log; False when a reader
    still needs part of it (a pull's export in one long transaction). Never waits for readers:
    TRUNCATE would wait out the busy timeout (10 s) inside the service loop."""
    timeout_ms = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute("PRAGMA busy_timeout=0")
    try:
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        db.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")
    return not busy


class RetentionSteps:
    """Bounded deletion steps on one connection (outside any open batch: the caller commits
    first); the batch adapts so that a step takes about RETENTION_STEP_S."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._db, self._path = db, path
        self._batch = RETENTION_BATCH_FRAMES // 10

    def over_size(self, max_db_mb: float) -> bool:
        """Whether the data (write-ahead log included) is over ``max_db_mb`` (0: no cap): three
        PRAGMAs and a stat, cheap enough to ask after every commit."""
        return max_db_mb > 0 and used_bytes(self._db, self._path) > max_db_mb * 1024 * 1024

    def step(self, retention_days: float, max_db_mb: float, now: float | None = None) -> tuple[int, bool]:
        """Returns (frames deleted, whether nothing is left to delete)."""
        started = time.monotonic()
        last = self._target(retention_days, max_db_mb, now)
        if last is None:
            return 0, self._give_back_pages()
        deleted = self._delete_frames_through(last)
        took = time.monotonic() - started
        if took > RETENTION_STEP_S:
            self._batch = max(10, self._batch // 2)
        elif took < RETENTION_STEP_S / 4:
            self._batch = min(RETENTION_BATCH_FRAMES, self._batch * 2)
        return deleted, False

    def _give_back_pages(self) -> bool:
        """Give up to VACUUM_PAGES_PER_STEP free pages back to the file system; True when none
        are left (or the database, made before incremental vacuum was set, cannot give any back).
        The pragma frees one page per step of its statement, and Connection.execute steps once
        (it freed one page a pass); executescript steps it to the end."""
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
            return True
        if self._db.execute("PRAGMA freelist_count").fetchone()[0] == 0:
            return True
        self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES_PER_STEP})")
        if self._db.execute("PRAGMA freelist_count").fetchone()[0]:
            return False
        checkpoint(self._db)  # the shorter file is in the log until then, and the log as big again
        return True

    def _target(self, retention_days: float, max_db_mb: float, now: float | None) -> int | None:
        """The last frame id of the next batch to delete, or None when nothing is due."""
        if retention_days > 0:
            last = self._past_age(iso_utc((time.time() if now is None else now) - retention_days * 86_400))
            if last is not None:
                return last
        return self._over_size(max_db_mb * 1024 * 1024) if max_db_mb > 0 else None

    def _past_age(self, cutoff: str) -> int | None:
        last = self._db.execute(
            "SELECT max(id) FROM (SELECT id FROM frames WHERE captured_at < ? ORDER BY id LIMIT ?)",
            (cutoff, self._batch),
        ).fetchone()[0]
        if last is not None:
            return int(last)
        # Cells go by when they were last seen; one row per cell, far fewer than frames.
        self._db.execute("DELETE FROM cells WHERE last_seen_at < ?", (cutoff,))
        self._db.execute("DELETE FROM runs WHERE ended_at IS NOT NULL AND ended_at < ?", (cutoff,))
        return None

    def _over_size(self, limit: float) -> int | None:
        if used_bytes(self._db, self._path) > limit and not checkpoint(self._db):
            # Deletions go to the WAL first: they are measured once moved into the file (and the
            # WAL truncated), or every step would find the data bigger, not smaller. A reader
            # holds the log: the pass ends and the next commit looks again.
            return None
        # The write-ahead log grows back to about WAL_FRACTION of the cap between checkpoints:
        # the data leaves it that room, so file and log together stay near the cap.
        data_limit = limit * (1.0 - WAL_FRACTION)
        used = used_bytes(self._db, self._path)
        total = self._db.execute("SELECT count(*) FROM frames").fetchone()[0] if used > data_limit else 0
        if not total:
            return None
        count = min(max(1, int(total * (1.0 - SIZE_TARGET_FRACTION * data_limit / used))), self._batch)
        query = "SELECT max(id) FROM (SELECT id FROM frames ORDER BY id LIMIT ?)"
        return int(self._db.execute(query, (count,)).fetchone()[0])

    def _delete_frames_through(self, last_frame_id: int) -> int:
        """The frames up to ``last_frame_id`` with their views, and the cells last seen before the
        oldest frame kept: their views are gone with them, and on a field of new cells the cells
        table alone would outgrow a size cap."""
        self._db.execute("BEGIN")
        try:
            self._db.execute("DELETE FROM views WHERE frame_id <= ?", (last_frame_id,))
            count = self._db.execute("DELETE FROM frames WHERE id <= ?", (last_frame_id,)).rowcount
            self._db.execute("DELETE FROM cells WHERE last_seen_at < (SELECT min(captured_at) FROM frames)")
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise
        return count
