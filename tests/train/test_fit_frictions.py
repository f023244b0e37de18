"""Issue 19.9: what a lab meets around a long fit: the progress it shows, mistakes named before
TensorFlow loads, the recipe in --help, and a refused int8 export that keeps the work done."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import REPO
from PIL import Image
from test_train_cli import train_command

from edge.capture.synthetic_cells import write_synthetic_dataset


def test_a_wrong_positive_is_named_before_tensorflow_loads(tmp_path: Path) -> None:
    for label in ("MDA231", "PC3"):
        (tmp_path / label / "c1").mkdir(parents=True)
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / label / "c1" / "x.png")
    result = train_command("fit", str(tmp_path), "--out", str(tmp_path / "m"), "--positive", "PC-3")
    assert result.returncode == 2, result.stderr
    assert "--positive 'PC-3' is not one of the label folders: MDA231, PC3" in result.stderr
    assert "tensorflow not loaded" in result.stdout


def test_fit_help_shows_the_whole_recipe() -> None:
    result = train_command("fit", "--help")
    for needed in ("weight decay", "warm-up", "lite0:", "compact:"):
        assert needed in result.stdout, needed


def test_fit_progress_names_training_auc_estimates_the_time_and_hides_retracing(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "cells", per_group=8, groups=4, seed=3)
    result = subprocess.run(
        [sys.executable, "-m", "train", "fit", str(data), "--out", str(tmp_path / "m"), "--positive", "spindle",
         "--backbone", "compact", "--size", "32", "--window-px", "128", "--widths", "8,16", "--epochs", "2",
         "--min-agreement", "0.5", "--pooling", "avg", "--no-leak-check", "--cv", "--group-by", r"_(g\d+)/"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "retracing" not in err
    # Nor TensorFlow's import banner, in the fit's process or in those its folds train in.
    assert "absl::InitializeLog" not in err and "oneDNN" not in err
    epoch_lines = [line for line in err.splitlines() if re.search(r" epoch +\d+/\d+ ", line)]
    assert epoch_lines and all("training AUC" in line and " auc " not in line for line in epoch_lines)
    assert "5 fits of 2 epochs" in err, "the plan at the start: 4 folds and the final fit"
    assert "left" in epoch_lines[0], "each epoch line estimates the time left"
