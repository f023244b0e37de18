"""The snapshots and crops folders failing under a running service: read-only (EROFS) or
replaced by a file (ENOTDIR). Each is a warning and a counter; the run and its results go on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, wait_until
from fakes import toml_text
from test_reliability import STARTUP_LIMIT_S, committed_frames, start_service, wait_for, wait_for_frames

# folder: (file suffix, status.json counter, the journal's prefix)
FOLDERS = {"snapshots": (".jpg", "snapshot_failures", "snapshot: "), "crops": (".png", "crop_failures", "crops: ")}
OLD_FILES = 60  # earlier files that fill the folder to its cap: each new file must delete some
CAP_MB = 0.5


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "metascope.toml"
    cap = {"max_mb": CAP_MB, "min_free_mb": 0.0}
    config.write_text(
        toml_text(
            {
                "state_dir": str(tmp_path / "state"),
                "source": {"kind": "synthetic", "synthetic_cells": 6, "fps": 20.0},
                "store": {"commit_interval_s": 0.1},
                "service": {"status_interval_s": 0.1},
                "snapshots": {"every_n_frames": 1, **cap},
                "crops": cap,
            }
        )
    )
    return config


def fill_to_the_cap(folder: Path, suffix: str) -> None:
    """Files an earlier run left, named (as the service names them) by a capture time."""
    folder.mkdir(parents=True, exist_ok=True)
    size = int(CAP_MB * 1024 * 1024 / OLD_FILES)
    for index in range(OLD_FILES):
        (folder / f"20200101T0000{index:02d}_000000Z_run1_frame{index}{suffix}").write_bytes(b"\0" * size)


def replace_with_a_file(folder: Path) -> None:
    """Delete the folder and put a file in its place. The running service makes the folder again
    when it writes into it, sometimes between the two steps: then try again."""
    for _ in range(50):
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.write_text("someone put a file here\n")
            return
        except IsADirectoryError:
            continue
    raise AssertionError(f"the service kept making {folder} again")


def status(state: Path) -> dict:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.parametrize("name", list(FOLDERS))
def test_a_folder_replaced_by_a_file_mid_run_is_a_warning_and_the_run_goes_on(
    name, tiny_model, tmp_path, notify_socket
) -> None:
    listener, address = notify_socket
    config = write_config(tmp_path)
    state = tmp_path / "state"
    suffix, counter, prefix = FOLDERS[name]
    fill_to_the_cap(state / name, suffix)
    service = start_service(config, tiny_model[0], address)
    try:
        wait_for(listener, "READY=1", STARTUP_LIMIT_S)
        wait_for_frames(state / "metascope.db", 2)
        replace_with_a_file(state / name)
        before = len(committed_frames(state / "metascope.db"))
        wait_for_frames(state / "metascope.db", before + 20)
        failures = wait_until(lambda: status(state).get("counters", {}).get(counter), "a failure count")
        assert service.poll() is None, "the run goes on"
        service.send_signal(signal.SIGTERM)
        code = service.wait(10)
    finally:
        service.kill()
        output, _ = service.communicate()
    assert code == 0, output
    assert "Traceback" not in output
    assert f"{prefix}cannot" in output and "Not a directory" in output
    assert failures >= 1
    assert (state / name).read_text() == "someone put a file here\n", "what the user put there is left alone"


@pytest.mark.parametrize("name", list(FOLDERS))
def test_a_read_only_folder_is_a_warning_and_every_frame_is_stored(name, tiny_model, tmp_path) -> None:
    """A folder on a file system mounted read-only (EROFS), already at its cap: the oldest file
    cannot be deleted to make room."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only file system (CI runs as root)")
    config = write_config(tmp_path)
    state = tmp_path / "state"
    folder = state / name
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    suffix, counter, prefix = FOLDERS[name]
    try:
        fill_to_the_cap(folder, suffix)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        result = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(config), "--model", str(tiny_model[0]),
             "--max-frames", "30"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        left = len(list(folder.iterdir()))
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{prefix}cannot" in result.stderr and "Read-only file system" in result.stderr
    assert len(committed_frames(state / "metascope.db")) == 30, "every frame stored"
    assert status(state)["counters"][counter] >= 1
    assert left == OLD_FILES, "nothing was deleted"
