"""Issue 19.10: small frictions a new user met on a desktop, each through the public command."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import demo
from edge.capture.base import Frame
from edge.cli import main
from edge.record.snapshots import annotate
from edge.records import DetectionResult, FrameResult


@pytest.fixture
def desktop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder to run in, with no systemd state directory and no system config."""
    import edge.config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(edge.config, "SYSTEM_STATE_DIR", tmp_path / "no-system-state")
    monkeypatch.setattr(edge.config, "SYSTEM_CONFIG", tmp_path / "no-system-config.toml")
    return tmp_path


def on_a_pi() -> bool:
    model = Path("/proc/device-tree/model")
    return model.is_file() and "Raspberry Pi" in model.read_text(errors="replace")


def test_the_demos_last_hint_names_a_command_that_exists(tiny_model, desktop: Path, capsys) -> None:
    assert demo.main(["--model", str(tiny_model[0]), "--frames", "3"]) == 0
    (hint,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("export:")]
    command = shlex.split(hint.removeprefix("export:"))[0]
    assert Path(command).is_file(), f"{command} (from {hint!r}) does not exist"


@pytest.mark.skipif(on_a_pi() or importlib.util.find_spec("picamera2") is not None, reason="needs a desktop")
def test_doctor_on_a_desktop_says_it_is_no_pi_and_checks_the_rest(tiny_model, desktop: Path, capsys) -> None:
    assert main(["doctor", "--model", str(tiny_model[0])]) == 0
    out = capsys.readouterr().out
    assert "SKIP  camera: not a Raspberry Pi" in out
    assert "PASS  model:" in out and "PASS  state_dir:" in out


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="needs a machine without picamera2")
def test_a_run_that_records_nothing_says_so(tiny_model, desktop: Path, capsys) -> None:
    """The desktop default (the Pi camera, absent here, and ./var never made): no 'run None', no
    database named that does not exist, and what to run on a desktop instead."""
    assert main(["run", "--model", str(tiny_model[0]), "--max-frames", "3"]) != 0
    text = capsys.readouterr().err
    assert "run None" not in text
    assert not (desktop / "var" / "metascope.db").exists()
    assert "results: database" not in text and "nothing recorded" in text
    assert "--source synthetic" in text


def test_bench_with_out_prints_one_summary_line(tiny_model, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pipeline.json"
    args = ["bench", "pipeline", "--model", str(tiny_model[0]), "--cells", "3", "--frames", "20", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert out.is_file()
    assert len(printed) == 1 and "p50" in printed[0] and str(out) in printed[0], printed[:3]


def test_snapshot_labels_are_large_enough_to_read() -> None:
    frame = Frame(np.full((480, 640), 90, np.uint8), captured_at=0.0, index=0)
    cell = DetectionResult((200, 300, 260, 360), (230.0, 330.0), 2400, False, 0.87, "PC3", True)
    image = np.asarray(annotate(FrameResult(frame, [cell])))
    above = image[:200, 290:420]  # the label sits above the box
    reddish = above[..., 0].astype(int) - above[..., 1].astype(int) > 60  # the label's colour, anti-aliased
    rows = np.flatnonzero(reddish.any(axis=1))
    assert rows.size and rows.max() - rows.min() + 1 >= 12, "label glyphs at least 12 px high on a 640x480 frame"


def test_classify_on_a_folder_skips_readme_and_licence_without_failing(tiny_model, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "crops"
    folder.mkdir()
    for index in range(2):
        cell = np.zeros((80, 80), np.uint8)
        cell[25:55, 20:60] = 120 + 20 * index
        Image.fromarray(cell).save(folder / f"cell{index}.png")
    (folder / "README.md").write_text("crops of culture 10kD2\n")
    (folder / "LICENSE").write_text("CC BY 4.0\n")
    assert main(["classify", str(folder), "--model", str(tiny_model[0])]) == 0
    err = capsys.readouterr().err
    assert "2 classified" in err and "0 failed" in err
    assert "2 non-image file(s) left out" in err
