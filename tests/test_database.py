"""The results database under `metascope run`: its size cap held between retention passes, and
what the service does with a database it cannot use (README, Reliability: "The results database")."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO
from test_reliability import STARTUP_LIMIT_S, start_service, wait_for, write_config

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
