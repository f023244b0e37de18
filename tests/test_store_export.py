"""The results database, retention, and the `metascope export` / `status` contract."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge.capture.base import Frame
from edge.cli import main
from edge.record.retention import checkpoint, used_bytes
from edge.record.store import ResultStore, RunInfo
from edge.record.times import iso_utc, parse_time
from edge.records import ClosedCell, DetectionResult, FrameResult

DAY = 86_400.0


def view(i: int) -> DetectionResult:
    """Cell i's first view."""
    probability, label = 0.25 + 0.25 * i, "b" if i else "a"
    return DetectionResult((1, 2, 11, 12), (6.0, 7.0), 80, i == 0, probability, label, i > 0, track=i + 1, view=0,
                      view_probability=probability, view_label=label)  # fmt: skip


def fake_result(captured_at: float, cells: int = 3, index: int = 0) -> FrameResult:
    """A frame in which the model took a view of each of ``cells`` cells and one cell's track
    closed (called positive in odd frames, a cluster in the first)."""
    frame = Frame(pixels=np.zeros((48, 64), dtype=np.uint8), captured_at=captured_at, index=index)
    probability = 0.75 if index % 2 else 0.25
    closed = ClosedCell(index + 1, 0, captured_at - 1, captured_at, 5, 3, probability, "b" if index % 2 else "a",
                        index == 0, 80, (6.0, 7.0), 0, "lost", positive=probability >= 0.5)  # fmt: skip
    return FrameResult(
        frame=frame,
        detections=[view(i) for i in range(cells)],
        timings_ms={"capture_wait": 0.1, "detect": 1.0, "preprocess": 0.5, "infer": 0.7},
        views=cells,
        closed=[closed],
    )


def run_info() -> RunInfo:
    return RunInfo("tiny", "0" * 64, "ai_edge_litert 2.3.0", "synthetic", "cells", 0.5, 128, {"state_dir": "x"})


def apply_retention(store: ResultStore, retention_days: float, max_db_mb: float, now: float | None = None) -> int:
    """Every retention step until nothing is left to delete (the service spreads them over its loop)."""
    deleted, done = 0, False
    while not done:
        step, done = store.retention_step(retention_days, max_db_mb, now)
        deleted += step
    return deleted


def filled_store(path: Path, frames: int, start: float, step: float = 1.0) -> ResultStore:
    store = ResultStore(path)
    store.start_run(run_info(), started_at=start)
    for index in range(frames):
        store.add_frame(fake_result(start + index * step, index=index))
    store.commit()
    return store


def test_schema_contract_autoincrement_ids_on_every_table(tmp_path: Path) -> None:
    filled_store(tmp_path / "r.db", 2, time.time()).close()
    with sqlite3.connect(tmp_path / "r.db") as db:
        for table in ("runs", "frames", "views", "cells"):
            sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
            assert "id INTEGER PRIMARY KEY AUTOINCREMENT" in sql
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_retention_by_age_never_reuses_ids(tmp_path: Path) -> None:
    now = time.time()
    store = filled_store(tmp_path / "r.db", 10, now - 10 * DAY, step=DAY)  # one frame a day, oldest 10 days
    assert apply_retention(store, retention_days=5.5, max_db_mb=0, now=now) == 5
    store.add_frame(fake_result(now))
    store.commit()
    with sqlite3.connect(tmp_path / "r.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM frames ORDER BY id")]
        oldest = db.execute("SELECT min(captured_at) FROM frames").fetchone()[0]
        view_frames = {row[0] for row in db.execute("SELECT frame_id FROM views")}
    assert ids == [6, 7, 8, 9, 10, 11], "the deleted ids 1-5 are never handed out again"
    assert oldest >= iso_utc(now - 5.5 * DAY)
    assert view_frames == set(ids), "views went with their frames"
    store.close()


def test_retention_by_size_deletes_oldest_first(tmp_path: Path) -> None:
    store = filled_store(tmp_path / "r.db", 3000, time.time())
    store.commit()
    with sqlite3.connect(tmp_path / "r.db") as db:
        checkpoint(db)  # the rows in the file, not in the write-ahead log
        before = used_bytes(db, tmp_path / "r.db")
    cap_mb = before / 2 / 1024 / 1024
    deleted = apply_retention(store, retention_days=0, max_db_mb=cap_mb)
    assert deleted > 0
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert used_bytes(db, tmp_path / "r.db") <= cap_mb * 1024 * 1024
    with sqlite3.connect(tmp_path / "r.db") as db:
        first, last, count = db.execute("SELECT min(id), max(id), count(*) FROM frames").fetchone()
    assert last == 3000 and first == 3000 - count + 1, "the newest frames are the ones kept"
    store.close()


def test_parse_time_accepts_dates_zones_and_rejects_junk() -> None:
    assert parse_time("2025-01-31") == "2025-01-31T00:00:00.000000Z"
    assert parse_time("2025-01-31T12:00:00+02:00") == "2025-01-31T10:00:00.000000Z"
    assert parse_time("2025-01-31T12:00:00Z") == "2025-01-31T12:00:00.000000Z"
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_time("yesterday")


# ------------------------------------------------------------------ export
@pytest.fixture
def state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    epoch = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    filled_store(state_dir / "metascope.db", 4, epoch, step=3600).close()  # 00:00, 01:00, 02:00, 03:00
    return state_dir


def export(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_csv_header_first_column_id_rows_in_id_order(state: Path, capsys) -> None:
    code, out, _ = export(capsys, "--state-dir", str(state), "--table", "frames")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0
    assert rows[0][0] == "id" and "captured_at" in rows[0]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4]
    assert rows[1][rows[0].index("captured_at")] == "2025-03-01T00:00:00.000000Z"


def test_export_after_id_since_until(state: Path, capsys) -> None:
    _, out, _ = export(capsys, "--state-dir", str(state), "--table", "views", "--after-id", "9")
    assert [int(r[0]) for r in list(csv.reader(io.StringIO(out)))[1:]] == [10, 11, 12]
    _, out, _ = export(
        capsys,
        "--state-dir",
        str(state),
        "--table",
        "frames",
        "--since",
        "2025-03-01T01:00:00Z",
        "--until",
        "2025-03-01T03:00:00Z",
    )
    assert [int(r[0]) for r in list(csv.reader(io.StringIO(out)))[1:]] == [2, 3]


def test_export_of_cells_gives_closed_cells_incrementally(state: Path, capsys) -> None:
    code, out, _ = export(capsys, "--state-dir", str(state), "--table", "cells")
    table = list(csv.reader(io.StringIO(out)))
    assert code == 0 and table[0][0] == "id" and [int(r[0]) for r in table[1:]] == [1, 2, 3, 4]
    assert {"run_id", "track", "field", "first_seen_at", "last_seen_at", "frames_seen", "views", "probability",
            "label", "cluster", "area_px"} <= set(table[0])  # fmt: skip
    _, out, _ = export(capsys, "--state-dir", str(state), "--table", "cells", "--after-id", "2")
    assert [int(r[0]) for r in list(csv.reader(io.StringIO(out)))[1:]] == [3, 4]
    _, out, _ = export(capsys, "--state-dir", str(state), "--table", "cells", "--since", "2025-03-01T02:00:00Z")
    assert [int(r[0]) for r in list(csv.reader(io.StringIO(out)))[1:]] == [3, 4], "by last seen"


def test_export_table_tracks_is_cells_with_a_warning(state: Path, capsys) -> None:
    code, out, err = export(capsys, "--state-dir", str(state), "--table", "tracks")
    _, cells, _ = export(capsys, "--state-dir", str(state), "--table", "cells")
    assert code == 0 and out == cells
    assert "--table tracks is now --table cells" in err


def test_retention_removes_cells_by_when_they_were_last_seen(tmp_path: Path) -> None:
    now = time.time()
    store = filled_store(tmp_path / "r.db", 10, now - 10 * DAY, step=DAY)  # a cell closes each day
    apply_retention(store, retention_days=5.5, max_db_mb=0, now=now)
    with sqlite3.connect(tmp_path / "r.db") as db:
        last_seen = [row[0] for row in db.execute("SELECT last_seen_at FROM cells ORDER BY id")]
    assert len(last_seen) == 5 and min(last_seen) >= iso_utc(now - 5.5 * DAY)
    store.close()


def test_export_with_no_rows_is_just_the_header(state: Path, capsys) -> None:
    code, out, _ = export(capsys, "--state-dir", str(state), "--table", "runs", "--after-id", "99")
    assert code == 0
    assert out.splitlines() == [out.splitlines()[0]] and out.startswith("id,")


def test_export_jsonl(state: Path, capsys) -> None:
    code, out, _ = export(capsys, "--state-dir", str(state), "--table", "views", "--format", "jsonl")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(records) == 12
    assert records[0]["id"] == 1 and records[0]["label"] == "a" and records[0]["cluster"] == 1


def test_export_without_a_database_fails_clearly(tmp_path: Path, capsys) -> None:
    code, out, err = export(capsys, "--state-dir", str(tmp_path / "empty"))
    assert code != 0 and out == ""
    assert "no results database" in err
    assert not (tmp_path / "empty" / "metascope.db").exists(), "export must never create a database"


def test_export_of_a_file_that_is_not_a_database(tmp_path: Path, capsys) -> None:
    (tmp_path / "metascope.db").write_bytes(b"garbage" * 200)
    code, _, err = export(capsys, "--state-dir", str(tmp_path))
    assert code != 0 and "cannot read the results database" in err


def test_export_rejects_a_bad_time(state: Path, capsys) -> None:
    code, _, err = export(capsys, "--state-dir", str(state), "--since", "last tuesday")
    assert code == 2 and "--since" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--after-id", "100000000000000000000"], "--after-id"),
        (["--after-id", "-5"], "--after-id"),
        (["--since", "9999-12-31T23:59:59-23:59"], "--since"),
        (["--until", "0001-01-01T00:00:00+23:59"], "--until"),
    ],
)
def test_export_arguments_out_of_range_are_usage_errors(state: Path, capsys, args, message) -> None:
    try:
        code, _, err = export(capsys, "--state-dir", str(state), *args)
    except SystemExit as exit_:  # argparse's own refusal of a value: also exit 2
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_export_config_names_the_state_dir(state: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "m.toml"
    config.write_text(f'state_dir = "{state}"\n')
    code, out, _ = export(capsys, "--config", str(config), "--table", "runs")
    assert code == 0 and len(out.splitlines()) == 2


# ------------------------------------------------------------------ status
def test_status_reports_runs_totals_and_database(state: Path, capsys) -> None:
    assert main(["status", "--state-dir", str(state), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    totals = report["totals"]
    assert totals["frames"] == 4 and totals["runs"] == 1
    assert totals["cells"] == 4 and totals["views"] == 12 and totals["open_cells"] == 0
    assert totals["positives"] == 2 and totals["clusters"] == 1
    assert report["totals"]["last_frame_at"] == "2025-03-01T03:00:00.000000Z"
    assert report["last_run"]["model_name"] == "tiny"
    assert report["database_bytes"] > 0
    assert main(["status", "--state-dir", str(state)]) == 0
    text = capsys.readouterr().out
    assert "4 frames, 4 cells (0 open), 12 views, 2 positive" in text
    assert "last frame:  2025-03-01T03:00:00.000000Z" in text


def test_status_without_a_database(tmp_path: Path, capsys) -> None:
    assert main(["status", "--state-dir", str(tmp_path)]) == 1
    assert "no results database" in capsys.readouterr().err


def test_retention_never_waits_for_a_reader_holding_an_old_snapshot(tmp_path: Path) -> None:
    """A pull's export reads in one long transaction; truncating the write-ahead log waits for it
    (the busy timeout, 10 s) inside the service loop, and with the size cap looked at after every
    commit that could happen every second. Retention leaves the log for the next commit instead.
    The bound is a lock wait's, not a speed figure: a step takes milliseconds, a wait 10 s."""
    store = filled_store(tmp_path / "r.db", 400, time.time())
    reader = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM frames").fetchone()  # holds the snapshot it read
    for index in range(400):
        store.add_frame(fake_result(time.time(), index=400 + index))
    store.commit()
    started = time.monotonic()
    store.retention_step(retention_days=0, max_db_mb=0.2)
    waited = time.monotonic() - started
    reader.execute("COMMIT")
    reader.close()
    assert waited < 5.0, f"a retention step waited {waited:.1f} s for a reader"
    apply_retention(store, retention_days=0, max_db_mb=0.2)  # the reader gone, the cap is reached
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert used_bytes(db, tmp_path / "r.db") <= 0.2 * 1024 * 1024
    store.close()
