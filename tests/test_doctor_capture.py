"""`metascope doctor --capture N [--focus]` against the fake camera (tests/hardware runs it on a
real one): the figures a user sets exposure and focus by, and the failures they must act on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge.commands.camera_check as camera_check
from edge.capture.frame_figures import frame_figures, sharpness
from edge.cli import main


def doctor(tmp_path: Path, tiny_model, *args: str, camera: str = "") -> int:
    config = tmp_path / "m.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[source]\nkind = "picamera2"\nwidth = 320\nheight = 240\n'
        f"[camera]\nframe_rate = 30.0\nexposure_us = 5000\n{camera}"
    )
    return main(["doctor", "--config", str(config), "--model", str(tiny_model[0]), *args])


def test_capture_reports_the_frames_and_what_the_camera_runs_with(fake_camera, tiny_model, tmp_path, capsys) -> None:
    assert doctor(tmp_path, tiny_model, "--capture", "3") == 0
    out = capsys.readouterr().out
    assert "PASS  capture: 3 frames 320x240 from imx477, sensor mode 2028x1520 12-bit" in out
    assert "colour space sYCC" in out and "ScalerCrop [0, 0, 4056, 3040]" in out
    assert "mean grey" in out and "clipped" in out and "sharpness" in out and "ms a frame" in out
    assert fake_camera.instances[0].closed


def test_a_busy_camera_says_to_stop_the_service(fake_camera, tiny_model, tmp_path, capsys) -> None:
    fake_camera.busy = True
    assert doctor(tmp_path, tiny_model, "--capture", "1") == 1
    out = capsys.readouterr().out
    assert "FAIL  capture: camera busy" in out and "sudo systemctl stop metascope" in out


def test_clipped_frames_fail_with_what_to_change(fake_camera, tiny_model, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(camera_check, "CLIPPED_LIMIT", -1.0)  # every frame counts as over-exposed
    assert doctor(tmp_path, tiny_model, "--capture", "1") == 1
    assert "FAIL  exposure:" in capsys.readouterr().out


def test_focus_sweep_finds_the_sharpest_lens_position(fake_camera, tiny_model, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(camera_check, "FOCUS_SETTLE_S", 0.0)
    fake_camera.cameras = [{"Model": "imx708", "Num": 0}]
    fake_camera.focus_at = 4.0
    assert doctor(tmp_path, tiny_model, "--capture", "1", "--focus") == 0
    out = capsys.readouterr().out
    assert "sharpest at 4: set camera.lens_position = 4" in out
    fake_camera.cameras = [{"Model": "imx477", "Num": 0}]
    assert doctor(tmp_path, tiny_model, "--capture", "1", "--focus") == 0
    assert "no focus motor" in capsys.readouterr().out


def test_focus_needs_capture(tmp_path, tiny_model, capsys) -> None:
    assert doctor(tmp_path, tiny_model, "--focus") == 2
    assert "--focus needs --capture N" in capsys.readouterr().err


def test_figures_of_a_frame() -> None:
    frame = np.full((40, 40), 100, dtype=np.uint8)
    frame[:4] = 255
    figures = frame_figures(frame)
    assert figures.clipped == pytest.approx(0.1) and figures.mean_grey == pytest.approx(115.5)
    edges = np.zeros((40, 40), dtype=np.uint8)
    edges[:, ::2] = 200
    assert sharpness(edges) > sharpness(np.full((40, 40), 100, dtype=np.uint8)) == 0.0
