"""Cross-validation folds train in processes of their own (train/isolated.py), so a fit's memory
does not grow with its folds: what a fold returns, raises or dies of reaches the fit as it was."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from edge.errors import CommandError
from train import progress
from train.isolated import in_fresh_process


def test_a_step_runs_in_another_process_and_its_result_comes_back() -> None:
    assert in_fresh_process("a step", os.getpid) != os.getpid()
    assert in_fresh_process("a step", math.hypot, 3.0, 4.0) == 5.0


def test_a_steps_error_is_raised_here_as_it_was_there() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        in_fresh_process("a step", int, "not a number")


def test_a_step_whose_process_dies_is_named_in_a_clear_error() -> None:
    # os.abort: the child ends on SIGABRT without a result, as one the kernel kills for memory would.
    with pytest.raises(CommandError, match=r"^cross-validation fold 2/7 \(40kD1\): its process ended without a result"):
        in_fresh_process("cross-validation fold 2/7 (40kD1)", os.abort)


def test_the_progress_display_carries_on_across_the_step() -> None:
    """The epoch count and time estimate go on where the child left them; --quiet holds there too."""
    saved = progress.state()
    try:
        progress.restore((False, 10, 3, 30.0))
        assert in_fresh_process("a step", progress.epoch_done, 10.0) == "about 60 s left"
        assert progress.state() == (False, 10, 4, 40.0)
        assert in_fresh_process("a step", progress.shown) is False
    finally:
        progress.restore(saved)


def test_a_step_ends_when_the_fit_that_started_it_is_killed() -> None:
    """`kill` on a fit (not Ctrl-C, which reaches the whole process group) must not leave a fold
    training on for minutes in an orphaned process that holds gigabytes and a core."""
    script = "import time; from train.isolated import in_fresh_process; in_fresh_process('a fold', time.sleep, 120)"
    fit = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, start_new_session=True)
    try:
        child = None
        deadline = time.monotonic() + 120  # the child imports TensorFlow before its step starts
        while child is None and time.monotonic() < deadline:
            child = next((pid for pid in children_of(fit.pid) if "spawn_main" in cmdline(pid)), None)
            time.sleep(0.2)
        assert child is not None, "the step's process never started"
        time.sleep(2)
        fit.send_signal(signal.SIGTERM)
        fit.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(child), f"the step's process {child} outlived the fit that started it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(fit.pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
