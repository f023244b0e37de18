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
