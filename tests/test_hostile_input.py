"""Hostile input to the `metascope` commands (issue 18): each test is one red-team attack, run
through the public command, and asserts what a user relies on: a message naming what is wrong,
the status from the exit table, and every other input still processed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from limited_child import run_limited
from PIL import Image

from edge.capture.synthetic import render_frame
from edge.cli import main
from edge.errors import ExitCode


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


def a_model_named(folder: Path, name: str, tiny_model, fifo: str) -> Path:
    """The tiny model copied as NAME.tflite and NAME.json, the one ``fifo`` names a FIFO instead."""
    model = folder / f"{name}.tflite"
    for path, source in ((model, tiny_model[0]), (model.with_suffix(".json"), tiny_model[0].with_suffix(".json"))):
        if path.suffix == fifo:
            os.mkfifo(path)
        else:
            shutil.copyfile(source, path)
    return model


def f25_attack(attack: str, tmp_path: Path, tiny_model) -> tuple[list[str], str]:
    """The command line of one F25 attack and what its message must say."""
    frame = str(a_field(tmp_path / "field.png"))
    detect = ["detect", frame, "--out", str(tmp_path / "out"), "--config"]
    if attack == "fifo config":
        os.mkfifo(tmp_path / "metascope.toml")
        return [*detect, str(tmp_path / "metascope.toml")], "not a regular file"
    if attack == "/dev/zero config":
        return [*detect, "/dev/zero"], "not a regular file"
    if attack == "huge config":
        (tmp_path / "huge.toml").write_text("# padding\n" * 300_000)
        return [*detect, str(tmp_path / "huge.toml")], "over the 1048576-byte limit"
    if attack == "deep config":
        (tmp_path / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
        return [*detect, str(tmp_path / "deep.toml")], "nested too deeply"
    if attack in ("fifo model", "fifo card"):
        model = a_model_named(tmp_path, "piped", tiny_model, ".tflite" if attack == "fifo model" else ".json")
        return ["classify", frame, "--model", str(model)], "not a regular file"
    assert attack == "100000 threads"
    return ["classify", frame, "--model", str(tiny_model[0]), "--threads", "100000"], "at most 64"


@pytest.mark.parametrize(
    "attack",
    ["fifo config", "/dev/zero config", "huge config", "deep config", "fifo model", "fifo card", "100000 threads"],
)
def test_f25_a_config_or_model_that_hangs_floods_or_nests_is_refused(attack, tiny_model, tmp_path: Path) -> None:
    """F25: a FIFO hung the read, /dev/zero filled memory, a 100,000-deep array hit RecursionError,
    100000 interpreter threads segfaulted. Each is a usage error (exit 2) naming the problem."""
    argv, message = f25_attack(attack, tmp_path, tiny_model)
    done = run_limited([sys.executable, "-m", "edge", *argv])
    assert done.returncode == ExitCode.USAGE, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("command", "setting"), [("status", "state_dir"), ("export", "state_dir"), ("run", "model.path")]
)
def test_f24_a_nul_byte_in_a_configured_path_is_a_config_error_naming_the_key(command, setting, tmp_path: Path) -> None:
    """F24: a NUL byte in state_dir or model.path reached os calls and raised ValueError (a traceback)."""
    state_dir = f"{tmp_path}/state\0/x" if setting == "state_dir" else str(tmp_path / "state")
    model = "models/x\0.tflite" if setting == "model.path" else ""
    config = tmp_path / "metascope.toml"
    text = f'state_dir = "{state_dir}"\n[source]\nkind = "synthetic"\n[model]\npath = "{model}"\n'
    config.write_text(text.replace("\0", "\\u0000"))  # TOML spells the NUL as an escape
    done = run_limited([sys.executable, "-m", "edge", command, "--config", str(config)])
    assert done.returncode == ExitCode.USAGE, done.stderr[-2000:]
    assert f"{setting}: must not contain a NUL byte" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("out_name", ["out", "."])
def test_f32_detect_does_not_analyse_its_own_output_on_the_next_run(out_name, tmp_path: Path, capsys) -> None:
    """F32: `detect DIR --out DIR/out` (or --out DIR) took its annotated PNGs and objects.csv for
    frames on the next run: an extra frame each time, and a failure for the CSV."""
    folder = tmp_path / "frames"
    folder.mkdir()
    frame = a_field(folder / "field.png")
    out = folder / out_name
    for _ in range(2):
        assert main(["detect", str(folder), "--out", str(out)]) == ExitCode.OK
        stdout, stderr = capsys.readouterr()
        assert "detect.png:" not in stdout and "skipped" not in stderr
    with (out / "objects.csv").open() as handle:
        assert {row.split(",")[0] for row in handle.read().splitlines()[1:]} == {str(frame)}
    assert sorted(path.name for path in out.glob("*.detect.png")) == ["field.detect.png"]
