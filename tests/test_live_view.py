"""The live view on its unix socket, in-process: a client that never reads never holds the loop
up (shown by counting frames, not by timing), the counts a page shows grow, nobody watching
costs the loop no drawing, the socket's problems are warnings, and doctor --live serves the
camera's frames. Through a real ssh forward and a real browser: tests/test_live_browser.py."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import wait_until
from fakes import make_config
from PIL import Image

import edge.record.snapshots as snapshots
from edge.capture.base import Frame
from edge.capture.synthetic import SyntheticSource
from edge.classify.classifier import Classifier
from edge.cli import main
from edge.logs import log
from edge.notify import Notifier
from edge.records import FrameResult
from edge.service.live import LiveView, run_status
from edge.service.live_http import UNIX_PATH_MAX
from edge.service.live_page import render_page
from edge.service.loop import Service

FRAMES = 200


@pytest.fixture(scope="module")
def classifier(tiny_model) -> Classifier:
    return Classifier.load(tiny_model[0])


def get(path: Path, target: str, timeout_s: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One GET over the unix socket: (status, headers, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout_s)
        client.connect(str(path))
        client.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def status(path: Path) -> dict[str, Any]:
    code, _, body = get(path, "/status.json")
    assert code == 200
    return json.loads(body)


def stream_client(report: dict[str, Any]) -> dict[str, Any] | None:
    return next((client for client in report["live"]["clients"] if client["kind"] == "stream"), None)


def read_stream(path: Path, parts: int, found: list[int]) -> None:
    """Read /stream.mjpg as a viewer would, noting each part's frame number (its JPEG checked)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(str(path))
        client.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        buffer = client.makefile("rb")
        assert b"multipart/x-mixed-replace" in b"".join(iter(lambda: buffer.readline(), b"\r\n"))
        while len(found) < parts:
            headers = {}
            for line in iter(lambda: buffer.readline(), b"\r\n"):
                if b": " in line:
                    name, value = line.decode().strip().split(": ", 1)
                    headers[name] = value
            jpeg = buffer.read(int(headers["Content-Length"]))
            with Image.open(io.BytesIO(jpeg)) as image:
                assert image.format == "JPEG" and image.size == (640, 480)
            buffer.readline()
            found.append(int(headers["X-Frame"]))


def test_a_client_that_never_reads_never_holds_the_loop_up(classifier, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    view = LiveView(tmp_path / "live.sock", "test rig", send_timeout_s=600)  # the stuck client stays connected
    service = Service(config, classifier, SyntheticSource(cells=6, seed=1), max_frames=FRAMES,
                      notifier=Notifier(address=""), observer=view.publish)  # fmt: skip
    view.feed.status_source = run_status(service)
    with view:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(str(view.path))
        stuck.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")  # and never reads a byte
        wait_until(lambda: stream_client(status(view.path)), "the stuck client is being streamed to")
        seen: list[int] = []
        reader = threading.Thread(target=read_stream, args=(view.path, 3, seen), daemon=True)
        reader.start()
        outcome: list[int] = []
        loop = threading.Thread(target=lambda: outcome.append(service.run()), daemon=True)
        loop.start()

        first = wait_until(lambda: (s := status(view.path))["run"] and s, "a status from the loop")
        frames = first["run"]["counters"]["frames"]
        later = wait_until(lambda: (s := status(view.path))["run"]["counters"]["frames"] > frames + 10 and s,
                           "the frame count grows")  # fmt: skip
        assert later["frame"]["number"] > first["frame"]["number"]
        assert later["run"]["counters"]["views"] > first["run"]["counters"]["views"]
        assert stream_client(later)["frames_dropped"] > stream_client(first)["frames_dropped"]

        loop.join(300)
        assert not loop.is_alive() and outcome == [0]
        assert service.counters.frames == FRAMES, "the loop took every frame while the client hung"
        stuck_client = stream_client(status(view.path))
        reader.join(60)
        stuck.close()
    assert stuck_client["frames_sent"] < FRAMES // 4, "it never read: only what the socket buffers took was sent"
    assert stuck_client["frames_sent"] + stuck_client["frames_dropped"] >= FRAMES - 2, stuck_client
    assert len(seen) == 3 and seen == sorted(set(seen)), "a client that reads gets newer frames, each once"
    assert not view.path.exists(), "the socket goes with the view"


def synthetic_results(count: int) -> list[FrameResult]:
    rng = np.random.default_rng(0)
    return [
        FrameResult(frame=Frame(rng.integers(0, 256, (120, 160), dtype=np.uint8), time.time(), index), detections=[])
        for index in range(count)
    ]


def test_nobody_watching_costs_the_loop_no_drawing_and_no_status(tmp_path: Path, monkeypatch) -> None:
    drawn: list[int] = []
    draw = snapshots.annotated_jpeg
    monkeypatch.setattr(snapshots, "annotated_jpeg", lambda result, quality: drawn.append(1) or draw(result, quality))
    asked: list[int] = []
    view = LiveView(tmp_path / "live.sock", "rig", lambda: asked.append(1) or {"state": "running"})
    results = synthetic_results(30)
    with view:
        for result in results[:20]:
            view.publish(result)
        assert drawn == [] and asked == [], "nobody asked: nothing drawn, no status copied"
        code, headers, body = get(view.path, "/frame.jpg")
        assert code == 200 and headers["X-Frame"] == "20" and body.startswith(b"\xff\xd8")
        assert len(drawn) == 1, "drawn for the one client that asked"
        for result in results[20:]:
            view.publish(result)
        assert status(view.path)["run"] == {"state": "running"} and asked, "watched: the loop copies its status"
        assert len(drawn) == 1


def test_a_status_that_fails_is_shown_and_never_stops_the_loop(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("counters")

    with LiveView(tmp_path / "live.sock", "rig", broken) as view:
        results = synthetic_results(3)
        view.publish(results[0])
        view.feed.asked()  # a page is open
        for result in results[1:]:
            view.publish(result)  # the loop goes on
        assert status(view.path)["run"] == {"error": "KeyError: 'counters'"}


def test_everything_the_page_shows_is_escaped(tmp_path: Path) -> None:
    title = '<script>alert("x")</script> & <b>'
    page = render_page(title)
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page, "figures go in as text only"
    with LiveView(tmp_path / "live.sock", title) as view:
        code, headers, body = get(view.path, "/")
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8" and body.decode() == page


def test_a_socket_that_cannot_be_made_is_a_warning_and_the_run_goes_on(
    tiny_model, tmp_path: Path, capfd, monkeypatch
) -> None:
    monkeypatch.setattr(log, "handlers", [])  # run's logging to this test's stderr ends with the test
    state = tmp_path / ("deep-" * 20)
    config = tmp_path / "m.toml"
    config.write_text(f'state_dir = "{state}"\n[model]\npath = "{tiny_model[0]}"\n[source]\nkind = "synthetic"\n')
    assert len(os.fsencode(state / "live.sock")) > UNIX_PATH_MAX
    assert main(["run", "--config", str(config), "--max-frames", "3"]) == 0
    err = capfd.readouterr().err
    assert "live view: cannot serve on" in err and f"over the {UNIX_PATH_MAX}" in err and "going on without it" in err
    assert "stopped: --max-frames 3 reached" in err

    not_a_socket = tmp_path / "live.sock"
    not_a_socket.write_text("a user's file")
    assert LiveView(not_a_socket, "rig").start() is False
    assert not_a_socket.read_text() == "a user's file", "left alone"


def test_the_socket_is_group_writable_replaces_a_dead_one_and_never_a_live_one(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # what a killed run leaves: the file, nobody behind it
    with LiveView(path, "first") as first:
        assert first.serving
        assert stat.S_IMODE(path.stat().st_mode) == 0o660, "the metascope group (the login user) may connect"
        second = LiveView(path, "second")
        assert second.start() is False, "a second run does not take the first one's socket"
        assert b"first" in get(path, "/")[2]
    assert not path.exists()


def test_clients_beyond_the_limit_are_told_503_and_counted(tmp_path: Path) -> None:
    with LiveView(tmp_path / "live.sock", "rig", max_clients=2, send_timeout_s=30) as view:
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        for client in idle:
            client.connect(str(view.path))  # connected, never asking: each holds a place
        wait_until(lambda: view.server.connections() == 2, "both are connected")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as third:
            third.settimeout(30)
            third.connect(str(view.path))
            answer = b"".join(iter(lambda: third.recv(4096), b""))  # told at once, before it asks anything
        assert answer.startswith(b"HTTP/1.0 503") and b"too many clients" in answer
        idle[0].close()
        wait_until(lambda: view.server.connections() == 1, "the place is given back")
        assert status(view.path)["live"]["refused"] == 1
        idle[1].close()


def test_doctor_live_serves_the_cameras_frames_until_ctrl_c(fake_camera, tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = tmp_path / "metascope-live.sock"
    config = tmp_path / "m.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[source]\nkind = "picamera2"\nwidth = 320\nheight = 240\n'
        "[camera]\nframe_rate = 30.0\nexposure_us = 5000\n"
    )
    seen: dict[str, Any] = {}

    def watch() -> None:
        try:
            first = wait_until(lambda: path.exists() and (s := status(path))["frame"] and s, "doctor serves")
            seen["later"] = wait_until(
                lambda: (s := status(path))["run"]["counters"]["frames"] > first["run"]["counters"]["frames"] and s,
                "more frames",
            )
            seen["first"] = first
            seen["jpeg"] = get(path, "/frame.jpg")
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = main(["doctor", "--config", str(config), "--model", str(tiny_model[0]), "--capture", "3", "--live"])
    watcher.join(10)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"live view on {path}" in out and "PASS  capture: 3 frames 320x240 from imx477" in out
    first, later = seen["first"], seen["later"]
    assert first["run"]["state"].startswith("doctor") and first["run"]["camera"]["applied"]["model"] == "imx477"
    assert later["frame"]["number"] > first["frame"]["number"] and later["frame"]["focus"] > 0
    status_code, _, jpeg = seen["jpeg"]
    with Image.open(io.BytesIO(jpeg)) as image:
        assert status_code == 200 and image.size == (320, 240)
    assert not path.exists() and fake_camera.instances[0].closed
