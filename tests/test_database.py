"""The results database under `metascope run`: its size cap held between retention passes, and
what the service does with a database it cannot use (README, Reliability: "The results database")."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_reliability import (
    STARTUP_LIMIT_S,
    committed_frames,
    start_service,
    wait_for,
    wait_for_frames,
    write_config,
)

from edge.errors import ExitCode

CAP_MB = 1.0
WRITTEN_FRAMES = 600  # about 6 MB of rows at 30 cells a frame: six caps' worth


def database_bytes(database: Path) -> int:
    """The database file and its write-ahead log, as `du` sees them."""
    return sum(path.stat().st_size for path in (database, Path(f"{database}-wal")) if path.exists())


def test_a_small_size_cap_holds_between_retention_passes(tiny_model, tmp_path, notify_socket) -> None:
    """A 1 MB cap grew to 9.6 MB plus a 4.2 MB write-ahead log in 30 s: the cap was looked at once
    every 600 s. Database and log together stay near the cap while the service writes."""
    listener, address = notify_socket
    config = write_config(
        tmp_path,
        source={"kind": "synthetic", "synthetic_cells": 30, "fps": 0.0},
        store={"commit_interval_s": 0.2, "max_db_mb": CAP_MB, "retention_days": 0.0},
    )
    database = config.parent / "state" / "metascope.db"
    service = start_service(config, tiny_model[0], address)
    largest, frames = 0, 0
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        deadline = time.monotonic() + 60.0
        # Until the service has written several caps' worth of rows (ids are never reused).
        while time.monotonic() < deadline and frames < WRITTEN_FRAMES:
            largest = max(largest, database_bytes(database))
            frames = last_frame_id(database)
            time.sleep(0.02)
    finally:
        service.terminate()
        output, _ = service.communicate(timeout=30)
    assert service.returncode == 0, output
    assert frames >= WRITTEN_FRAMES, f"only {frames} frames written in 60 s: the test proves nothing"
    assert largest <= 1.5 * CAP_MB * 1024 * 1024, f"database + WAL reached {largest / 2**20:.1f} MB, cap {CAP_MB} MB"


def last_frame_id(database: Path) -> int:
    try:
        db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(db.execute("SELECT coalesce(max(id), 0) FROM frames").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def run(config: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(model), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip


# ------------------------------------------------------------------ opening outcomes
def garbage_database(database: Path) -> bytes:
    """A file at the database's path that SQLite says is not a database (SQLITE_NOTADB)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    content = b"a torn copy, not SQLite\n" * 400
    database.write_bytes(content)
    return content


def malformed_database(database: Path) -> bytes:
    """A real SQLite file whose schema page was overwritten (SQLITE_CORRUPT: "malformed")."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, note TEXT)")
        db.executemany("INSERT INTO runs (note) VALUES (?)", [("x" * 200,)] * 100)
    db.close()
    content = bytearray(database.read_bytes())
    content[100:4096] = b"\xa5" * (4096 - 100)  # the header stays valid, sqlite_master is junk
    database.write_bytes(bytes(content))
    return bytes(content)


@pytest.mark.parametrize("damage", [garbage_database, malformed_database], ids=["notadb", "corrupt"])
def test_a_corrupt_database_is_moved_aside_and_a_new_one_started(tiny_model, tmp_path, damage) -> None:
    """A corrupt file ran "classifying without storing, trying again every 10 s" forever with
    exit 0, every result lost. It is renamed (with its write-ahead log), never deleted, a new
    database takes its place, and the journal, status.json and the summary say so."""
    config = write_config(tmp_path, service={"status_interval_s": 0.1})
    state = tmp_path / "state"
    database = state / "metascope.db"
    content = damage(database)
    stale_wal = b"the old database's write-ahead log"
    Path(f"{database}-wal").write_bytes(stale_wal)
    result = run(config, tiny_model[0], "--max-frames", "10")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    aside = sorted(state.glob("metascope.corrupt-*.db"))
    assert len(aside) == 1, sorted(path.name for path in state.iterdir())
    assert aside[0].read_bytes() == content, "the corrupt file is kept as it was"
    assert Path(f"{aside[0]}-wal").read_bytes() == stale_wal, "its write-ahead log went with it"
    assert len(committed_frames(database)) == 10, "a new database holds this run's frames"
    assert "corrupt" in result.stderr and aside[0].name in result.stderr
    status = json.loads((state / "status.json").read_text())
    assert status["database_set_aside"] == str(aside[0])
    stopped = next(line for line in result.stderr.splitlines() if "stopped:" in line)
    assert aside[0].name in stopped, "the summary names the set-aside database"
    status_text = subprocess.run(
        [sys.executable, "-m", "edge", "status", "--config", str(config)], capture_output=True, text=True, cwd=REPO
    )
    assert status_text.returncode == 0, status_text.stderr
    assert str(aside[0]) in status_text.stdout, "`metascope status` names it after the run too"


def newer_database(database: Path) -> bytes:
    """A database a later metascope made (schema version above this one's), in rollback-journal mode."""
    from edge.record.schema import SCHEMA_VERSION

    database.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT)")
    db.execute("INSERT INTO runs (started_at) VALUES ('2030-01-01T00:00:00.000000Z')")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    return database.read_bytes()


def test_a_newer_schema_is_refused_untouched_with_exit_11(tiny_model, tmp_path) -> None:
    """It ran without storing forever (exit 0), and set WAL mode on the file before reading its
    version. Now: exit 11 (systemd does not restart it), the file byte for byte as it was."""
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    content = newer_database(database)
    result = run(config, tiny_model[0], "--max-frames", "10")
    assert result.returncode == ExitCode.DATABASE_REFUSED, result.stderr
    assert "newer" in result.stderr and str(database) in result.stderr
    assert database.read_bytes() == content, "the file is not touched"
    assert not Path(f"{database}-wal").exists()


def test_a_directory_at_the_database_path_is_an_environment_error(tiny_model, tmp_path) -> None:
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    database.mkdir(parents=True)
    result = run(config, tiny_model[0], "--max-frames", "10")
    assert result.returncode == ExitCode.ENVIRONMENT, result.stderr
    assert "directory" in result.stderr and str(database) in result.stderr
    assert database.is_dir() and not list(database.iterdir())


@contextlib.contextmanager
def read_only_file(path: Path):
    """``path`` made read-only for everyone, root included: a read-only bind mount of the file
    (root ignores file modes, and a read-only state directory would stop the run at its lock)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount a file read-only (CI runs as root)")
    for options in (["--bind"], ["-o", "remount,ro,bind"]):
        mounted = subprocess.run(["mount", *options, str(path), str(path)], capture_output=True)
        if mounted.returncode != 0:
            subprocess.run(["umount", str(path)], check=False, capture_output=True)
            pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_database_is_an_environment_error(tiny_model, tmp_path) -> None:
    """Waiting cannot make a read-only file writable: exit 5, which names it."""
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    assert run(config, tiny_model[0], "--max-frames", "3").returncode == 0
    content = database.read_bytes()
    with read_only_file(database):
        result = run(config, tiny_model[0], "--max-frames", "10")
    assert result.returncode == ExitCode.ENVIRONMENT, result.stderr
    assert "read-only" in result.stderr and str(database) in result.stderr
    assert database.read_bytes() == content


def test_a_busy_database_is_waited_for_and_stored_into_once_free(tiny_model, tmp_path, notify_socket) -> None:
    """Another process holding the database (a long export, a person's sqlite3 shell) is worth
    waiting for: the service classifies without storing and opens it once it is free."""
    listener, address = notify_socket
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    assert run(config, tiny_model[0], "--max-frames", "3").returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "db.execute('PRAGMA locking_mode=EXCLUSIVE'); db.execute('BEGIN EXCLUSIVE')\n"
         "print('held', flush=True); time.sleep(12); db.execute('COMMIT')", str(database)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    service = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        holder.wait(30)
        wait_for_frames(database, 8, limit_s=40.0)
        service.send_signal(signal.SIGTERM)
        code = service.wait(10)
    finally:
        holder.kill()
        service.kill()
        output, _ = service.communicate()
    assert code == 0, output
    assert holder.returncode == 0, "the other process held the database for its 12 s, then let go"
    assert "Traceback" not in output


PLANTS = {
    "trigger and view": (
        "CREATE TRIGGER wipe_history AFTER INSERT ON frames BEGIN DELETE FROM frames WHERE id < NEW.id; END;"
        "CREATE VIEW endless AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n;",
        ["trigger 'wipe_history'", "view 'endless'"],
    ),
    "table": ("CREATE TABLE payload (x TEXT);", ["table 'payload'"]),
}


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_a_database_with_planted_objects_is_refused_by_name_untouched(tiny_model, tmp_path, plant) -> None:
    """A trigger planted in metascope.db ran inside the service (it deleted every earlier frame,
    exit 0, no warning); trusted_schema off does not stop a plain DELETE. A trigger, a view or a
    table outside the schema version's: exit 11, each named, before anything is written."""
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    assert run(config, tiny_model[0], "--max-frames", "3").returncode == 0
    script, names = PLANTS[plant]
    with sqlite3.connect(database) as db:
        db.executescript(script)
    db.close()
    content = database.read_bytes()
    result = run(config, tiny_model[0], "--max-frames", "10")
    assert result.returncode == ExitCode.DATABASE_REFUSED, result.stderr
    for name in names:
        assert name in result.stderr
    assert database.read_bytes() == content, "nothing written"
    assert committed_frames(database) == [1, 2, 3]


def test_a_missing_state_directory_is_made_and_one_that_cannot_be_is_exit_5(tiny_model, tmp_path) -> None:
    """A state directory that is not there yet is made (a fresh desktop, ./var); one that cannot
    be made (its parent is a file, an unmounted disk) is an environment error, named."""
    nested = write_config(tmp_path, state_dir=str(tmp_path / "new" / "state"))
    made = run(nested, tiny_model[0], "--max-frames", "3")
    assert made.returncode == 0, made.stderr
    assert len(committed_frames(tmp_path / "new" / "state" / "metascope.db")) == 3
    (tmp_path / "not-a-folder").write_text("a file where the state directory's parent should be")
    blocked = write_config(tmp_path, state_dir=str(tmp_path / "not-a-folder" / "state"))
    refused = run(blocked, tiny_model[0], "--max-frames", "3")
    assert refused.returncode == ExitCode.ENVIRONMENT, refused.stderr
    assert str(tmp_path / "not-a-folder" / "state") in refused.stderr and "Traceback" not in refused.stderr
