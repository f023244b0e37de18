"""The service as systemd runs it, in a subprocess: kill -9, SIGTERM, restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from fakes import toml_text
from PIL import Image

STARTUP_LIMIT_S = 60.0  # interpreter + model load on a loaded CI machine; not a speed assertion


def write_config(tmp_path: Path, **sections: dict) -> Path:
    config = tmp_path / "metascope.toml"
    data = {
        "state_dir": str(tmp_path / "state"),
        "source": {"kind": "synthetic", "synthetic_cells": 4, "fps": 50.0},
        "store": {"commit_interval_s": 0.1},
        "snapshots": {"every_n_frames": 0},
    }
    config.write_text(toml_text({**data, **sections}))
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


def stop_and_time(service: subprocess.Popen, limit_s: float) -> tuple[int, float]:
    """SIGTERM the service; its exit status and the seconds it took to exit."""
    service.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = service.wait(limit_s)
    return code, time.monotonic() - signalled


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


def kill_9_after(config: Path, model: Path, notify_socket, frames: int, settle_s: float = 0.0) -> Path:
    """Start the service, let it commit ``frames`` frames (and run ``settle_s`` longer), then
    kill -9 it. Returns its database."""
    listener, address = notify_socket
    database = config.parent / "state" / "metascope.db"
    service = start_service(config, model, address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        wait_for_frames(database, frames)
        time.sleep(settle_s)
        service.send_signal(signal.SIGKILL)
        service.wait(10)
    finally:
        service.kill()
        service.communicate()
    return database


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
    assert runs == [(1, 1), (2, 1)], "the restart closed the killed run"
    assert new_frames == (len(after) + 1, 5), "the new run goes on after the old one's last id"


def test_sigterm_exits_0_within_2_s_and_nothing_after_stopping_is_lost(tiny_model, tmp_path, notify_socket) -> None:
    listener, address = notify_socket
    config = write_config(tmp_path)
    database = tmp_path / "state" / "metascope.db"
    service = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        wait_for_frames(database, 10)
        code, took = stop_and_time(service, limit_s=5)
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


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "48k"):
    """A full-disk stand-in: a tmpfs of ``size`` (root only, as in CI)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a sized tmpfs (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_snapshots_and_status_that_cannot_be_written_are_warnings_not_a_crash(tiny_model, tmp_path) -> None:
    """A full snapshots disk and an unwritable status.json: the run goes on, every frame is
    stored, each failure is counted and logged, and no temp file is left behind."""
    state = tmp_path / "state"
    (state / "status.json").mkdir(parents=True)  # a folder where the file should go: cannot be replaced
    config = tmp_path / "metascope.toml"
    config.write_text(
        toml_text(
            {
                "state_dir": str(state),
                "source": {"kind": "synthetic", "synthetic_cells": 6},
                "snapshots": {"every_n_frames": 1, "min_free_mb": 0.0},
                "service": {"status_interval_s": 0.1},
            }
        )
    )
    with tiny_tmpfs(state / "snapshots") as snapshots:
        result = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(tiny_model[0]),
             "--max-frames", "40"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        leftovers = [p.name for p in snapshots.iterdir() if p.name.endswith(".tmp")]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "snapshot: cannot write" in result.stderr and "status: cannot write" in result.stderr
    assert leftovers == [] and not [p for p in state.iterdir() if p.name.endswith(".tmp")]
    assert len(committed_frames(state / "metascope.db")) == 40, "every frame stored"
    with sqlite3.connect(state / "metascope.db") as db:
        reason = db.execute("SELECT exit_reason FROM runs").fetchone()[0]
    assert "max-frames" in reason


def test_sigterm_does_not_wait_out_a_slow_paced_source(tiny_model, tmp_path, notify_socket) -> None:
    """At 0.05 frames a second the next frame is 20 s away; systemd kills after 10 s."""
    listener, address = notify_socket
    config = write_config(tmp_path, source={"kind": "synthetic", "fps": 0.05, "synthetic_cells": 3})
    service = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        time.sleep(1.0)  # inside the wait for the second frame
        code, took = stop_and_time(service, limit_s=15)
    finally:
        service.kill()
        output, _ = service.communicate()
    assert code == 0, output
    assert took <= 2.0, f"took {took:.2f} s to stop"


def test_a_second_run_on_the_same_state_directory_is_refused(tiny_model, tmp_path, notify_socket) -> None:
    """Two services writing one database dropped 46 % of frames and flipped status.json."""
    listener, address = notify_socket
    config = write_config(tmp_path)
    first = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        second = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(tiny_model[0]),
             "--max-frames", "5"],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(10)
        first.communicate()
    assert second.returncode == 5, second.stderr
    assert f"already in use by process {first.pid}" in second.stderr


def run_once(config: Path, model: Path, frames: int = 5) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(model),
         "--max-frames", str(frames)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip


def test_a_symlink_at_the_lock_path_is_refused_and_its_target_left_alone(tiny_model, tmp_path) -> None:
    """The lock file was opened following links and truncated: a link planted at
    STATE/metascope.lock emptied whatever file it named (as the service's user)."""
    config = write_config(tmp_path)
    victim = tmp_path / "precious.txt"
    victim.write_text("a file the service must never write\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "metascope.lock").symlink_to(victim)
    result = run_once(config, tiny_model[0])
    assert result.returncode == 5, result.stderr
    assert "metascope.lock" in result.stderr and "symbolic link" in result.stderr
    assert victim.read_text() == "a file the service must never write\n"
    assert not (state / "metascope.db").exists(), "nothing ran"


def test_deleting_the_lock_file_does_not_let_a_second_run_start(tiny_model, tmp_path, notify_socket) -> None:
    """The lock lived on a file anyone could delete: the next run locked a new file, started on
    the same database and marked the running one as killed."""
    listener, address = notify_socket
    config = write_config(tmp_path)
    first = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        (tmp_path / "state" / "metascope.lock").unlink()
        second = run_once(config, tiny_model[0])
        still_running = first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(10)
        first.communicate()
    assert second.returncode == 5, second.stderr
    assert "already in use" in second.stderr
    assert still_running
    with sqlite3.connect(tmp_path / "state" / "metascope.db") as db:
        runs = db.execute("SELECT id, exit_reason FROM runs ORDER BY id").fetchall()
    assert len(runs) == 1 and "did not stop cleanly" not in (runs[0][1] or ""), runs


def real_frames(folder: Path, names: list[str]) -> None:
    from edge.capture.synthetic import render_frame

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        pixels, _ = render_frame(rng, 240, 320, 4)
        Image.fromarray(pixels).save(folder / name)


def test_replay_skips_unreadable_files_and_goes_on_to_the_end(tiny_model, tmp_path) -> None:
    """Six bad files in a row (more than source.max_failures) are six skipped frames, not a dead
    camera: the rest of the folder is still classified."""
    frames = tmp_path / "frames"
    real_frames(frames, ["a.png", "b.png", "c.png", "x.png", "y.png", "z.png"])
    for name in ("d.png", "e.png", "f.png", "g.png", "h.png", "i.png"):
        (frames / name).write_bytes(b"not an image")
    config = write_config(tmp_path, source={"kind": "replay", "replay_path": str(frames), "max_failures": 5})
    result = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(tiny_model[0])],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "d.png" in result.stderr and "skipped" in result.stderr
    assert len(committed_frames(tmp_path / "state" / "metascope.db")) == 6


def test_replay_follow_takes_files_added_after_the_start(tiny_model, tmp_path, notify_socket) -> None:
    listener, address = notify_socket
    frames = tmp_path / "frames"
    real_frames(frames, ["001.png", "002.png"])
    source = {"kind": "replay", "replay_path": str(frames), "replay_follow": True, "timeout_s": 0.5}
    config = write_config(tmp_path, source=source)
    service = start_service(config, tiny_model[0], address)
    database = tmp_path / "state" / "metascope.db"
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        wait_for_frames(database, 2)
        real_frames(frames, ["003.png", "004.png", "005.png"])
        wait_for_frames(database, 5)
        service.send_signal(signal.SIGTERM)
        code = service.wait(10)
    finally:
        service.kill()
        output, _ = service.communicate()
    assert code == 0, output
    assert len(committed_frames(database)) == 5


def test_replay_skips_tiny_frames_by_name_and_counts_them(tiny_model, tmp_path) -> None:
    """Five 1x1 images in a row (source.max_failures) ended the run as a dead camera (exit 3):
    a frame too small to hold a cell is a skipped file, named and counted, and the rest is classified."""
    frames = tmp_path / "frames"
    real_frames(frames, ["a.png", "b.png", "c.png", "x.png", "y.png", "z.png"])
    for name in ("d.png", "e.png", "f.png", "g.png", "h.png"):
        Image.new("L", (1, 1), 128).save(frames / name)
    config = write_config(tmp_path, source={"kind": "replay", "replay_path": str(frames), "max_failures": 5})
    result = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(tiny_model[0])],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "d.png" in result.stderr and "1x1" in result.stderr
    assert len(committed_frames(tmp_path / "state" / "metascope.db")) == 6
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["counters"]["skipped_files"] == 5
    assert status["counters"]["source_failures"] == 0


def test_replay_follow_takes_a_file_caught_half_written(tiny_model, tmp_path, notify_socket) -> None:
    """A followed folder's file was marked seen at its first listing: one caught while another
    program was still writing it was skipped as unreadable and never read again."""
    listener, address = notify_socket
    frames = tmp_path / "frames"
    real_frames(frames, ["001.png", "002.png"])
    real_frames(tmp_path / "complete", ["003.png"])
    whole = (tmp_path / "complete" / "003.png").read_bytes()
    source = {"kind": "replay", "replay_path": str(frames), "replay_follow": True, "timeout_s": 0.5}
    config = write_config(tmp_path, source=source)
    service = start_service(config, tiny_model[0], address)
    database = tmp_path / "state" / "metascope.db"
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        wait_for_frames(database, 2)
        with (frames / "003.png").open("wb") as writing:
            writing.write(whole[: len(whole) // 2])
            writing.flush()
            time.sleep(2.0)  # the service lists the folder every 0.25 s: it meets the half file
            writing.write(whole[len(whole) // 2 :])
        wait_for_frames(database, 3)
        service.send_signal(signal.SIGTERM)
        code = service.wait(10)
    finally:
        service.kill()
        output, _ = service.communicate()
    assert code == 0, output
    assert len(committed_frames(database)) == 3


def test_a_killed_run_keeps_current_totals_and_is_closed_at_the_next_start(tiny_model, tmp_path, notify_socket) -> None:
    """Totals written only at a clean stop left every killed run at frames=0 and open forever
    (retention never removed it)."""
    _, address = notify_socket
    config = write_config(tmp_path)
    database = kill_9_after(config, tiny_model[0], notify_socket, frames=20, settle_s=0.5)
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT count(*), sum(detections) FROM frames").fetchone()
        totals = db.execute("SELECT frames, views, updated_at FROM runs WHERE id = 1").fetchone()
    assert totals[0] > 0 and totals[2] is not None
    assert stored[0] - totals[0] <= 60, "the run's totals follow its commits"
    restarted = start_service(config, tiny_model[0], address, "--max-frames", "3")
    output, _ = restarted.communicate(timeout=STARTUP_LIMIT_S)
    assert restarted.returncode == 0, output
    with sqlite3.connect(database) as db:
        ended, reason, frames = db.execute("SELECT ended_at, exit_reason, frames FROM runs WHERE id = 1").fetchone()
    assert ended is not None and "did not stop cleanly" in reason and frames == stored[0]
    assert "run 1 did not stop cleanly" in output


def test_a_killed_run_loses_no_cell(tiny_model, tmp_path, notify_socket) -> None:
    """Cells closed before a kill -9 stay as they were; the cells it was following are closed
    from their stored views at the next start: every cell with a view gets exactly one row."""
    _, address = notify_socket
    source = {"kind": "still", "synthetic_cells": 8, "fps": 50.0, "still_move_every": 10}
    config = write_config(tmp_path, source=source)
    database = kill_9_after(config, tiny_model[0], notify_socket, frames=25)
    track_rows = "SELECT * FROM cells WHERE run_id = 1 ORDER BY track"
    with sqlite3.connect(database) as db:
        closed_before = db.execute(track_rows).fetchall()
        viewed = [row[0] for row in db.execute("SELECT DISTINCT track FROM views WHERE run_id = 1 ORDER BY track")]
    assert closed_before, "the stage moved: cells had closed before the kill"
    restarted = start_service(config, tiny_model[0], address, "--max-frames", "3")
    output, _ = restarted.communicate(timeout=STARTUP_LIMIT_S)
    assert restarted.returncode == 0, output
    with sqlite3.connect(database) as db:
        closed_after = db.execute(track_rows).fetchall()
        reasons = dict(db.execute("SELECT track, end_reason FROM cells WHERE run_id = 1").fetchall())
    assert set(closed_before) <= set(closed_after), "closed cells are kept as they were"
    assert [row[2] for row in closed_after] == viewed, "every cell with a view, exactly once"
    recovered = set(viewed) - {row[2] for row in closed_before}
    assert recovered and all("unclean stop" in reasons[track] for track in recovered)


def test_a_full_disk_at_start_classifies_and_stores_once_space_returns(tiny_model, tmp_path, notify_socket) -> None:
    """On a 100 % full disk the store cannot even be created: the service starts anyway,
    classifies (the journal has its summary), and begins storing when space comes back,
    instead of failing until systemd gives up."""
    listener, address = notify_socket
    state = tmp_path / "state"
    config = write_config(
        tmp_path, service={"summary_interval_s": 1.0}, store={"commit_interval_s": 0.1, "min_free_mb": 0.0}
    )
    with tiny_tmpfs(state, size="1m"):
        filler = state / "filler"
        with filler.open("wb") as handle, contextlib.suppress(OSError):  # until the disk is full
            handle.write(b"\0" * 1024 * 1024)
        service = start_service(config, tiny_model[0], address)
        try:
            wait_for(listener, "READY=1", STARTUP_LIMIT_S)
            time.sleep(2.5)
            assert service.poll() is None, "it keeps running on a full disk"
            filler.unlink()
            wait_for_frames(state / "metascope.db", 5, limit_s=30.0)
            service.send_signal(signal.SIGTERM)
            code = service.wait(10)
        finally:
            service.kill()
            output, _ = service.communicate()
    assert code == 0, output
    assert "cannot open the results database" in output and "frames (" in output
