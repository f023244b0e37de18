"""The service as systemd runs it, in a subprocess: kill -9, SIGTERM, restart."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from fakes import toml_text

STARTUP_LIMIT_S = 60.0  # interpreter + model load on a loaded CI machine; not a speed assertion


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "metascope.toml"
    config.write_text(
        toml_text(
            {
                "state_dir": str(tmp_path / "state"),
                "source": {"kind": "synthetic", "synthetic_cells": 4, "fps": 50.0},
                "store": {"commit_interval_s": 0.1},
                "snapshots": {"every_n_frames": 0},
            }
        )
    )
    return config


def start_service(config: Path, model: Path, notify: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": notify, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(model), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def notify_socket(tmp_path: Path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    listener.bind(address)
    yield listener, address
    listener.close()


def wait_for(listener: socket.socket, wanted: str, limit_s: float) -> list[str]:
    """Read notify messages until one starts with ``wanted``; all messages seen so far."""
    seen = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        listener.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            message = listener.recv(4096).decode()
        except TimeoutError:
            break
        seen.append(message)
        if message.startswith(wanted):
            return seen
    raise AssertionError(f"no {wanted} from the service; saw {[m.splitlines()[0] for m in seen]}")


def committed_frames(database: Path) -> list[int]:
    db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT id FROM frames ORDER BY id")]
    finally:
        db.close()


def wait_for_frames(database: Path, count: int, limit_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if database.exists():
            try:
                ids = committed_frames(database)
            except sqlite3.OperationalError:
                ids = []
            if len(ids) >= count:
                return ids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} frames committed in {limit_s} s")


def test_kill_9_loses_nothing_committed_and_a_restart_opens_a_new_run(tiny_model, tmp_path, notify_socket) -> None:
    listener, address = notify_socket
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    service = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        wait_for_frames(database, 20)
        committed = committed_frames(database)  # read just before the kill: these must survive it
        service.send_signal(signal.SIGKILL)
        assert service.wait(10) == -signal.SIGKILL
    finally:
        service.kill()
        service.communicate()
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        after = [row[0] for row in db.execute("SELECT id FROM frames ORDER BY id")]
        runs = db.execute("SELECT id, ended_at FROM runs").fetchall()
    assert set(committed) <= set(after)
    assert after == list(range(1, len(after) + 1))
    assert runs == [(1, None)], "the killed run never got to close itself"

    restarted = start_service(config, tiny_model[0], address, "--max-frames", "5")
    output, _ = restarted.communicate(timeout=STARTUP_LIMIT_S)
    assert restarted.returncode == 0, output
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runs = db.execute("SELECT id, ended_at IS NOT NULL FROM runs ORDER BY id").fetchall()
        new_frames = db.execute("SELECT min(id), count(*) FROM frames WHERE run_id = 2").fetchone()
    assert runs == [(1, 0), (2, 1)]
    assert new_frames == (len(after) + 1, 5), "the new run goes on after the old one's last id"


def test_sigterm_exits_0_within_2_s_and_nothing_after_stopping_is_lost(tiny_model, tmp_path, notify_socket) -> None:
    listener, address = notify_socket
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    service = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        wait_for_frames(database, 10)
        service.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = service.wait(5)
        took = time.monotonic() - signalled
    finally:
        service.kill()
        output, _ = service.communicate()
    assert code == 0, output
    assert took <= 2.0, f"took {took:.2f} s to stop"
    messages = wait_for(listener, "STOPPING=1", 2.0)
    assert messages[-1].startswith("STOPPING=1")
    with sqlite3.connect(database) as db:
        frames = db.execute("SELECT count(*) FROM frames").fetchone()[0]
        ended, reason, run_frames = db.execute("SELECT ended_at, exit_reason, frames FROM runs").fetchone()
    assert ended is not None and reason == "SIGTERM received"
    assert frames == run_frames, "every frame the service classified is in the database"
    assert f"stopped: SIGTERM received; summary: run 1, {frames} frames" in output
