"""The camera path on a real Raspberry Pi with its camera: what the fakes can only mirror.

Run on the Pi, from the project copy deploy/push.sh made, with the one command:

    sudo bash ~/metascope-deploy/tests/hardware/run.sh

It stops the service (these checks open the camera themselves), runs this file with the
installed venv, and starts the service again. Off a Pi, or without run.sh, every test here is
skipped. The last test runs the service under the installed, hardened unit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edge.capture.camera_setup import CameraBusy, pinned_sensor_mode
from edge.capture.picamera import Picamera2Source
from edge.config import Config, SourceConfig


def on_a_pi() -> bool:
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


REASON = (
    "not a Raspberry Pi"
    if not on_a_pi()
    else "real-camera checks run through tests/hardware/run.sh (it stops the service first)"
)
pytestmark = [pytest.mark.hardware, pytest.mark.skipif(os.environ.get("METASCOPE_HARDWARE") != "1", reason=REASON)]

STATE = Path("/var/lib/metascope")


def camera(**settings) -> Picamera2Source:
    config = Config(source=SourceConfig(width=640, height=480))
    camera_settings = config.camera if not settings else config.with_overrides("camera", **settings).camera
    return Picamera2Source(640, 480, camera_settings, start_timeout_s=5.0)


def test_the_camera_runs_in_srgb_full_range_with_its_pinned_sensor_mode() -> None:
    source = camera()
    source.open()
    try:
        frames = [source.next_frame(5.0) for _ in range(5)]
    finally:
        source.close()
    applied = source.applied
    print(json.dumps(applied, indent=2))  # the record of what this Pi was verified with
    assert "sYCC" in applied["colour_space"], "libcamera changed the colour space: grey levels would not match"
    pinned = pinned_sensor_mode(applied["model"])
    if pinned is not None:
        assert applied["sensor_mode"]["output_size"] == list(pinned["output_size"])
        assert applied["sensor_mode"]["bit_depth"] == pinned["bit_depth"]
    assert applied["scaler_crop"] is not None and applied["lores"]["size"] == [640, 480]
    assert "ce_enable 0" in applied["tuning"], applied["tuning"]
    for frame in frames:
        assert frame.pixels.shape == (480, 640) and frame.pixels.dtype == np.uint8


def test_close_frees_the_camera_at_once_and_a_second_user_is_told_it_is_busy() -> None:
    first = camera()
    first.open()
    try:
        first.next_frame(5.0)
        with pytest.raises(CameraBusy, match="camera busy"):
            camera().open()
    finally:
        started = time.monotonic()
        first.close()  # a capture is always pending in the capture thread
        took = time.monotonic() - started
    assert took < 2.0, f"close took {took:.1f} s"
    again = camera()
    again.open()  # freed by close(), not by picamera2's atexit hook
    again.close()


def test_lens_position_reaches_a_camera_with_a_focus_motor() -> None:
    probe = camera()
    probe.open()
    try:
        low, high = probe.lens_range()
    finally:
        probe.close()
    if high <= low:
        pytest.skip("this camera has no focus motor (HQ camera: focus by hand)")
    source = camera(lens_position=2.0)
    source.open()
    try:
        for _ in range(10):  # the lens takes a few frames to get there
            source.next_frame(5.0)
        metadata = source._camera.capture_metadata()
    finally:
        source.close()
    assert abs(metadata["LensPosition"] - 2.0) < 0.2, metadata.get("LensPosition")


def test_doctor_captures_frames() -> None:
    done = subprocess.run(
        ["/opt/metascope/venv/bin/metascope", "doctor", "--capture", "5"], capture_output=True, text=True, timeout=120
    )
    print(done.stdout)
    assert "PASS  capture:" in done.stdout, done.stdout + done.stderr


def test_the_service_classifies_under_the_installed_hardened_unit() -> None:
    """The sandbox (DevicePolicy=closed, the allowed /dev nodes, PrivateTmp for the tuning file)
    only shows on a real camera: start the installed unit and wait for stored frames."""
    started = time.time()
    subprocess.run(["systemctl", "restart", "metascope"], check=True, timeout=180)
    try:
        deadline = time.monotonic() + 90
        frames = 0
        while time.monotonic() < deadline and frames == 0:
            time.sleep(2)
            try:
                status = json.loads((STATE / "status.json").read_text())
            except (OSError, ValueError):
                continue
            frames = status.get("counters", {}).get("frames", 0) if status.get("state") == "running" else 0
        journal = subprocess.run(
            ["journalctl", "-u", "metascope", "--since", f"@{int(started)}", "--no-pager"],
            capture_output=True,
            text=True,
        ).stdout
        assert frames > 0, "no frame classified under the unit within 90 s:\n" + journal[-3000:]
        with sqlite3.connect(f"file:{STATE / 'metascope.db'}?mode=ro", uri=True) as db:
            config = json.loads(db.execute("SELECT config FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
        assert "sYCC" in config["camera_applied"]["colour_space"]
    finally:
        subprocess.run(["systemctl", "stop", "metascope"], timeout=60)
