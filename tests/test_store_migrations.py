"""The results database migrates in place: a database made by an older metascope keeps its rows."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import DatabaseRefused
from edge.record.schema import MIGRATIONS, SCHEMA_VERSION
from edge.record.store import ResultStore


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
    with pytest.raises(DatabaseRefused, match="newer than this metascope"):
        ResultStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def release_0_3_database(path: Path) -> None:
    """What metascope 0.3 (schema 5) left on a Pi: views in `cells`, cells in `tracks`, frames'
    detections in `frames.cells`, a run's views in `runs.cells` and its cells in `runs.tracks`."""
    with sqlite3.connect(path) as db:
        for version, script in enumerate(MIGRATIONS[:5], start=1):
            db.executescript(script.replace(":database_id", "'00112233445566778899aabbccddeeff'"))
            db.execute(f"PRAGMA user_version={version}")
        db.execute(
            "INSERT INTO runs (started_at, ended_at, host, software_version, threshold, frames, cells, tracks)"
            " VALUES ('2026-01-01T00:00:00.000000Z', '2026-01-01T00:01:00.000000Z', 'pi', '0.3.0', 0.5, 2, 3, 2)"
        )
        for index in range(2):
            db.execute(
                "INSERT INTO frames (run_id, captured_at, frame_index, width, height, cells, positives, clusters,"
                f" dropped_before, over_budget, views, field) VALUES (1, '2026-01-01T00:00:0{index}.000000Z',"
                f" {index}, 640, 480, 2, 1, 0, 0, 0, 2, 0)"
            )
        for frame, track, view, probability in [(1, 1, 0, 0.9), (1, 2, 0, 0.2), (2, 1, 1, 0.8)]:
            db.execute(
                "INSERT INTO cells (frame_id, run_id, captured_at, label, probability, cluster, area_px, centroid_x,"
                " centroid_y, bbox_x0, bbox_y0, bbox_x1, bbox_y1, track, view, orientation) VALUES"
                f" ({frame}, 1, '2026-01-01T00:00:0{frame - 1}.000000Z', 'PC3', {probability}, 0, 900, 10, 10,"
                f" 0, 0, 20, 20, {track}, {view}, 0)"
            )
        for track, probability in [(1, 0.85), (2, 0.2)]:
            db.execute(
                "INSERT INTO tracks (run_id, track, field, first_seen_at, last_seen_at, frames_seen, views,"
                " probability, label, cluster, area_px, centroid_x, centroid_y, reclassified, end_reason) VALUES"
                f" (1, {track}, 0, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:01.000000Z', 2, 1, {probability},"
                " 'PC3', 0, 900, 10, 10, 0, 'run stopped')"
            )


def exported(capsys, state: Path, table: str) -> list[dict[str, str]]:
    assert main(["export", "--state-dir", str(state), "--table", table]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_a_0_3_database_reads_under_todays_names_before_and_after_it_migrates(tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    state.mkdir()
    release_0_3_database(state / "metascope.db")
    before = {table: exported(capsys, state, table) for table in ("views", "cells", "frames", "runs")}
    assert [row["probability"] for row in before["views"]] == ["0.9", "0.2", "0.8"], "views: the old cells table"
    assert [row["probability"] for row in before["cells"]] == ["0.85", "0.2"], "cells: the old tracks table"
    assert [row["detections"] for row in before["frames"]] == ["2", "2"]
    assert (before["runs"][0]["views"], before["runs"][0]["cells"]) == ("3", "2")
    assert main(["status", "--state-dir", str(state), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema_version"] == 5 and report["tables"] == ["runs", "frames", "views", "cells"]
    assert (report["totals"]["views"], report["totals"]["cells"], report["totals"]["positives"]) == (3, 2, 1)
    ResultStore(state / "metascope.db").close()  # what the service's next start does
    with sqlite3.connect(state / "metascope.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "frames", "views", "cells"} <= tables and "tracks" not in tables
    after = {table: exported(capsys, state, table) for table in ("views", "cells", "frames", "runs")}
    assert after == before, "the same rows under the same names"
