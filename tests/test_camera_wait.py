"""Recovering from a busy, missing or failing camera without giving up (issue 12.3), against
the fake camera: the service waits for it in-process and backs off between restarts."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from conftest import received
from fakes import make_config

import edge.capture.camera_wait as camera_wait
from edge.capture import open_source
from edge.capture.camera_wait import CameraRestarts
from edge.notify import Notifier
from edge.service.loop import EXIT_OK, EXIT_SOURCE_FAILED, Service


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr(camera_wait, "BACKOFF_S", (0.05, 0.1, 0.2))
    monkeypatch.setattr(camera_wait, "STOP_CHECK_S", 0.01)


def camera_config(tmp_path: Path):
    return make_config(tmp_path, source={"kind": "picamera2", "width": 320, "height": 240, "max_failures": 2})


def run_in_thread(service: Service) -> tuple[threading.Thread, list[int]]:
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(service.run()), daemon=True)
    thread.start()
    return thread, outcome


def test_a_busy_camera_is_waited_for_with_one_journal_line(
    classifier, fake_camera, quick_backoff, tmp_path: Path, caplog, notify_socket
) -> None:
    caplog.set_level(logging.INFO, logger="metascope")
    fake_camera.busy = True  # someone is focusing with rpicam-hello
    listener, address = notify_socket
    config = camera_config(tmp_path)
    notifier = Notifier(address=address)
    service = Service(config, classifier, open_source(config), max_frames=2, notifier=notifier)
    thread, outcome = run_in_thread(service)
    time.sleep(0.6)  # several tries, all busy
    assert thread.is_alive(), "the service gave up on a busy camera"
    fake_camera.busy = False  # rpicam-hello closed
    thread.join(10)
    assert outcome == [EXIT_OK] and service.counters.frames == 2
    busy_lines = [r for r in caplog.records if "camera busy" in r.getMessage()]
    assert len(busy_lines) == 1 and "never gives up" in busy_lines[0].getMessage()
    assert "camera: open after" in caplog.text
    messages = received(listener)
    # Before READY=1 the unit's TimeoutStartSec would kill a waiting service: each pause extends it.
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in messages)
    assert any(m.startswith("READY=1") for m in messages)


def test_a_missing_camera_is_waited_for_until_sigterm(classifier, fake_camera, quick_backoff, tmp_path: Path) -> None:
    fake_camera.cameras = []  # ribbon cable out
    config = camera_config(tmp_path)
    service = Service(config, classifier, open_source(config), notifier=Notifier(address=""))
    thread, outcome = run_in_thread(service)
    time.sleep(0.5)
    assert thread.is_alive()
    service.request_stop("SIGTERM")
    thread.join(5)
    assert outcome == [EXIT_OK]
    assert service.exit_reason == "SIGTERM received while waiting for the camera"


def test_runs_that_end_with_a_camera_failure_back_off_before_the_next_start(
    classifier, fake_camera, quick_backoff, tmp_path: Path, caplog
) -> None:
    fake_camera.behaviour = "raise"  # the camera fails every capture: exit 3, systemd restarts
    config = camera_config(tmp_path)
    restarts = CameraRestarts(config.state_path)
    for expected in (1, 2, 3):
        service = Service(config, classifier, open_source(config), notifier=Notifier(address=""))
        assert service.run() == EXIT_SOURCE_FAILED
        assert restarts.failures() == expected
    assert "the last 2 run(s) ended with a camera failure; waiting 0 s" in caplog.text
    fake_camera.behaviour = "ok"
    service = Service(config, classifier, open_source(config), max_frames=1, notifier=Notifier(address=""))
    assert service.run() == EXIT_OK
    assert restarts.failures() == 0  # a run that ends otherwise starts the count again


def test_the_restart_count_survives_a_damaged_file_and_restarts_after_a_long_healthy_run(tmp_path: Path) -> None:
    restarts = CameraRestarts(tmp_path)
    assert restarts.failures() == 0  # no file: the usual case
    restarts.path.write_text("{not json")
    assert restarts.failures() == 0
    restarts.record(True, ran_s=5.0)
    restarts.record(True, ran_s=5.0)
    assert restarts.failures() == 2
    restarts.record(True, ran_s=camera_wait.HEALTHY_RUN_S)  # it had worked for ten minutes
    assert restarts.failures() == 1
