"""The `metascope-train` command's own surface: version, help, and mistakes found before
TensorFlow loads (which takes seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from edge import __version__

PROBE = """
import sys
from train.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:  # argparse's own errors
    code = exit.code
print("tensorflow loaded" if "tensorflow" in sys.modules else "tensorflow not loaded")
sys.exit(code)
"""


def train_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_version_and_bare_help() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "train", "--version"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert version.returncode == 0 and version.stdout.strip() == f"metascope-train {__version__}"
    bare = subprocess.run([sys.executable, "-m", "train"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bare.returncode == 0 and "fit" in bare.stdout and "evaluate" in bare.stdout


@pytest.mark.parametrize("command", [["fit", "/nonexistent/cells", "--out", "models/x"], ["evaluate", "m.tflite",
                                     "/nonexistent/cells"]])  # fmt: skip
def test_a_missing_data_folder_is_named_before_tensorflow_loads(command: list[str]) -> None:
    result = train_command(*command)
    assert result.returncode == 2, result.stderr
    assert "/nonexistent/cells: no such folder" in result.stderr
    assert "tensorflow not loaded" in result.stdout


def test_quiet_fit_prints_its_headline_and_nothing_else(tmp_path) -> None:
    """`--quiet` means quiet: no progress, no TensorFlow banner, no converter chatter."""
    from edge.capture.synthetic_cells import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "cells", per_group=8, groups=4, seed=3)
    result = subprocess.run(
        [sys.executable, "-m", "train", "fit", str(data), "--out", str(tmp_path / "m" / "cells"), "--positive",
         "spindle", "--backbone", "compact", "--size", "32", "--window-px", "128", "--widths", "8,16", "--epochs",
         "2", "--min-agreement", "0.5", "--pooling", "avg", "--no-leak-check", "--quiet"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("cells: held-out test groups: ROC AUC")
    # One split: the figure rests on few groups, and the line says how few (4 paired groups here).
    assert "resting on 1 test group(s) of 4" in result.stdout
