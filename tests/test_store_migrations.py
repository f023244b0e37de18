"""The results database migrates in place: a database made by an older metascope keeps its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.record.schema import MIGRATIONS, SCHEMA_VERSION
from edge.record.store import ResultStore, StoreError


def first_release_database(path: Path) -> None:
    """What metascope 0.1.0 left on a Pi: schema 1 and some rows."""
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version=1")
        db.execute(
            "INSERT INTO runs (started_at, host, software_version) VALUES ('2026-01-01T00:00:00Z', 'pi', '0.1.0')"
        )
        db.execute(
            "INSERT INTO frames (run_id, captured_at, frame_index, width, height, cells, positives, clusters,"
            " dropped_before, over_budget) VALUES (1, '2026-01-01T00:00:01Z', 0, 640, 480, 1, 0, 0, 0, 0)"
        )


def test_a_database_of_the_first_release_migrates_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "metascope.db"
    first_release_database(path)
    store = ResultStore(path)
    identity = store.database_id
    store.close()
    assert len(identity) == 32 and int(identity, 16) >= 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT host FROM runs").fetchall() == [("pi",)]
        assert db.execute("SELECT count(*) FROM frames").fetchone()[0] == 1
    again = ResultStore(path)
    assert again.database_id == identity, "the identity is made once"
    again.close()


def test_every_new_database_gets_its_own_identity(tmp_path: Path) -> None:
    first, second = ResultStore(tmp_path / "a.db"), ResultStore(tmp_path / "b.db")
    assert first.database_id != second.database_id
    first.close()
    second.close()


def test_a_database_from_a_newer_metascope_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "metascope.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this metascope"):
        ResultStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
