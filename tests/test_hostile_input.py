"""Hostile input to the `metascope` commands (issue 18): each test is one red-team attack, run
through the public command, and asserts what a user relies on: a message naming what is wrong,
the status from the exit table, and every other input still processed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.capture.synthetic import render_frame
from edge.cli import main


def a_field(path: Path) -> Path:
    """A synthetic frame of cells: an input that works."""
    Image.fromarray(render_frame(np.random.default_rng(3), 120, 160, 4)[0]).save(path)
    return path


@pytest.mark.parametrize("command", ["detect", "classify"])
def test_f7_a_one_pixel_wide_or_high_image_is_a_named_skip(command, tiny_model, tmp_path: Path, capsys) -> None:
    """F7: binning a 1-pixel-wide frame left an empty axis and np.pad raised, losing every other file."""
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.full((1, 50), 90, np.uint8)).save(folder / "a-wide.png")
    Image.fromarray(np.full((50, 1), 90, np.uint8)).save(folder / "b-high.png")
    good = a_field(folder / "c-good.png")
    out = tmp_path / "out"
    argv = ["--out", str(out)] if command == "detect" else ["--model", str(tiny_model[0])]
    assert main([command, str(folder), *argv]) == 1
    stdout, stderr = capsys.readouterr()
    for name, size in (("a-wide.png", "50x1"), ("b-high.png", "1x50")):
        assert f"{folder / name}: {size} pixels is too small" in stderr
    assert str(good) in stdout, "the good frame after them is still processed"
    if command == "detect":
        assert (out / "c-good.detect.png").is_file() and (out / "objects.csv").is_file()
