"""The results database's schema and its migrations.

``PRAGMA user_version`` is the schema version. Opening a database applies, in order and each in
its own transaction, every migration above its version, so a database made by an older
metascope opens, migrates in place and keeps its rows. A database newer than this code knows is
refused rather than written to. A new column or table is a new entry at the end of MIGRATIONS;
an entry, once released, never changes.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid

# Version 1: the first release's tables (as it created them, IF NOT EXISTS for its own reopen).
_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    host TEXT NOT NULL,
    software_version TEXT NOT NULL,
    model_name TEXT,
    model_sha256 TEXT,
    interpreter TEXT,
    source TEXT,
    mode TEXT,
    threshold REAL,
    window_px INTEGER,
    config TEXT,
    frames INTEGER NOT NULL DEFAULT 0,
    cells INTEGER NOT NULL DEFAULT 0,
    exit_reason TEXT
);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    captured_at TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    cells INTEGER NOT NULL,
    positives INTEGER NOT NULL,
    clusters INTEGER NOT NULL,
    dropped_before INTEGER NOT NULL,
    capture_wait_ms REAL,
    detect_ms REAL,
    preprocess_ms REAL,
    infer_ms REAL,
    over_budget INTEGER NOT NULL,
    snapshot TEXT
);
CREATE INDEX IF NOT EXISTS frames_captured_at ON frames (captured_at);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    captured_at TEXT NOT NULL,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    cluster INTEGER NOT NULL,
    area_px INTEGER NOT NULL,
    centroid_x REAL NOT NULL,
    centroid_y REAL NOT NULL,
    bbox_x0 INTEGER NOT NULL,
    bbox_y0 INTEGER NOT NULL,
    bbox_x1 INTEGER NOT NULL,
    bbox_y1 INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_captured_at ON cells (captured_at);
CREATE INDEX IF NOT EXISTS cells_frame_id ON cells (frame_id);
"""

# Version 2: the database's identity, a random id made once: pulled folders keep the rows of
# each database apart, so a re-flashed Pi starting again at id 1 is not mistaken for the old one.
_V2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('database_id', :database_id);
"""

# Version 3: a run's totals and last commit are kept current as it goes (a killed run used to
# read frames=0 and stay open); the next start closes it.
_V3 = """
ALTER TABLE runs ADD COLUMN updated_at TEXT;
"""

# Version 4: cells, not observations (issue 14). A `cells` row is now one view: one model call
# on one tracked cell (track: its number in the run; view: its number among the cell's views,
# 0 where its views (re)start; orientation: the dihedral turn of its input). Rows written before
# have NULL there (each was a cell in a frame). `tracks` holds one row per distinct cell, written
# when it closes (so ids follow closing order and `export --after-id` stays incremental), with the
# mean of its views' logits as its probability. Frames record their views and stage field.
_V4 = """
ALTER TABLE cells ADD COLUMN track INTEGER;
ALTER TABLE cells ADD COLUMN view INTEGER;
ALTER TABLE cells ADD COLUMN orientation INTEGER;
CREATE INDEX cells_run_track ON cells (run_id, track);
ALTER TABLE frames ADD COLUMN views INTEGER;
ALTER TABLE frames ADD COLUMN field INTEGER;
ALTER TABLE runs ADD COLUMN tracks INTEGER NOT NULL DEFAULT 0;
CREATE TABLE tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    track INTEGER NOT NULL,
    field INTEGER NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    frames_seen INTEGER NOT NULL,
    views INTEGER NOT NULL,
    probability REAL,
    label TEXT,
    cluster INTEGER NOT NULL,
    area_px INTEGER NOT NULL,
    centroid_x REAL NOT NULL,
    centroid_y REAL NOT NULL,
    reclassified INTEGER NOT NULL,
    end_reason TEXT NOT NULL,
    UNIQUE (run_id, track)
);
CREATE INDEX tracks_last_seen_at ON tracks (last_seen_at);
"""

# Version 5: a cell's row names the file of its masked crop in the state directory's crops/
# folder (edge/record/crops.py; NULL: none kept, or since deleted under crops.max_mb).
_V5 = """
ALTER TABLE tracks ADD COLUMN crop TEXT;
"""

# Version 6: names that say what a row is. The table of views (one model call on one tracked cell)
# was `cells` and the table of cells (one row per tracked cell) was `tracks`; a frame's count of
# detections was `frames.cells`, a run's count of views `runs.cells` and of cells `runs.tracks`.
# `track` stays the column that numbers a cell within its run (what tracking calls it).
_V6 = """
ALTER TABLE cells RENAME TO views;
ALTER TABLE tracks RENAME TO cells;
DROP INDEX cells_captured_at;
CREATE INDEX views_captured_at ON views (captured_at);
DROP INDEX cells_frame_id;
CREATE INDEX views_frame_id ON views (frame_id);
DROP INDEX cells_run_track;
CREATE INDEX views_run_track ON views (run_id, track);
DROP INDEX tracks_last_seen_at;
CREATE INDEX cells_last_seen_at ON cells (last_seen_at);
ALTER TABLE frames RENAME COLUMN cells TO detections;
ALTER TABLE runs RENAME COLUMN cells TO views;
ALTER TABLE runs RENAME COLUMN tracks TO cells;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)

# The tables of each version's schema, by today's name, and what each was called then (a reader of
# an older database, `export` on a Pi whose service has not migrated it yet, asks for today's names).
TABLES = ("runs", "frames", "views", "cells")
NAMES_BEFORE_V6 = {"views": "cells", "cells": "tracks"}
COLUMNS_BEFORE_V6 = {"frames": {"detections": "cells"}, "runs": {"views": "cells", "cells": "tracks"}}
SCHEMA_VERSION = len(MIGRATIONS)


def version_of(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> int:
    """Bring ``db`` (opened with isolation_level=None) to SCHEMA_VERSION; returns the version
    it had. Raises ValueError for a database made by a newer metascope."""
    found = version_of(db)
    if found > SCHEMA_VERSION:
        raise ValueError(f"schema version {found} is newer than this metascope's ({SCHEMA_VERSION}); upgrade it")
    for version in range(found + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        if version_of(db) >= version:  # another process migrated it while this one waited
            db.execute("COMMIT")
            continue
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                db.execute(statement, {"database_id": uuid.uuid4().hex} if ":database_id" in statement else {})
            db.execute(f"PRAGMA user_version={version}")
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:  # SQLite may have rolled back itself (SQLITE_FULL at COMMIT)
                db.execute("ROLLBACK")
            raise
    return found


@functools.cache
def tables_of_version(version: int) -> frozenset[str]:
    """The tables a database of schema ``version`` holds (SQLite's own included): its migrations
    applied to an empty database in memory, so the answer cannot drift from MIGRATIONS. Version 0
    is the first release's tables (it did not set user_version) or none."""
    db = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS[: max(version, 1)]:
            for statement in _statements(script):
                db.execute(statement, {"database_id": "0" * 32} if ":database_id" in statement else {})
        return frozenset(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        db.close()


def _statements(script: str) -> list[str]:
    """The script's statements (none of ours holds a ';' inside a string)."""
    return [part.strip() for part in script.split(";") if part.strip()]
