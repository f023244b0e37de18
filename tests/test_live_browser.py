"""Watching a rig from a desktop: `metascope run` serves its live view on a unix socket, `metascope
live HOST` forwards it through a real sshd (tests/sshd_harness.py) and a real headless Chromium
shows the page: a frame that changes, counts that grow, every name and message escaped. Then
Ctrl-C ends the forward, and the rig stops within the unit's stop budget though a client hangs."""

from __future__ import annotations

import configparser
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chromium_harness import browser
from conftest import REPO, wait_until
from fakes import toml_text
from PIL import Image
from sshd_harness import ALIAS, DEAD_ALIAS, SshServer

from edge.capture.synthetic import SyntheticSource
from edge.cli import main
from edge.logs import log

pytestmark = pytest.mark.slow

# What the "rig" runs over ssh: this checkout's metascope (PYTHONPATH: the ssh session starts
# elsewhere, where an installed metascope of another checkout would answer).
REMOTE_METASCOPE = f"env PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m edge"
FOLDER = 'rig <b>one<b> & "co"'  # a frames folder whose name is markup, as the page title shows it
REPLAYED_FRAMES = 6  # distinct frames the rig loops over
BAD_FILE = "<img src=x onerror=alert(1)>.png"  # not an image: its name is in a warning on the page


def stop_budget_s() -> float:
    """TimeoutStopSec of the unit the Pi runs: the rig must be gone within it."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((REPO / "systemd" / "metascope.service").read_text())
    return float(unit["Service"]["TimeoutStopSec"])


@dataclass
class Rig:
    config: Path
    state: Path
    process: subprocess.Popen

    @property
    def socket(self) -> Path:
        return self.state / "live.sock"

    def frames(self) -> int:
        try:
            return json.loads((self.state / "status.json").read_text())["counters"]["frames"]
        except (OSError, ValueError, KeyError):
            return 0


@pytest.fixture
def rig(tmp_path: Path, tiny_model) -> Iterator[Rig]:
    """`metascope run` replaying synthetic frames from a folder named in markup, paced like a camera."""
    frames = tmp_path / FOLDER
    frames.mkdir()
    source = SyntheticSource(cells=8, seed=3)
    source.open()
    for number in range(REPLAYED_FRAMES):
        Image.fromarray(source.next_frame(1.0).pixels).save(frames / f"frame{number}.png")
    (frames / BAD_FILE).write_text("not an image")
    config = tmp_path / "pi.toml"
    settings = {"replay_path": str(frames), "replay_loop": True, "fps": 10.0}
    config.write_text(toml_text({"state_dir": str(tmp_path / "state"), "model": {"path": str(tiny_model[0])},
                                 "source": {"kind": "replay", **settings}, "snapshots": {"every_n_frames": 0},
                                 "service": {"status_interval_s": 0.2}}))  # fmt: skip
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)], stderr=log, cwd=REPO)
    found = Rig(config, tmp_path / "state", process)
    try:
        wait_until(lambda: found.frames() > 0 and found.socket.exists(), "the rig classifies and serves", 120)
        yield found
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


class Live:
    """`metascope live HOST` as a person runs it, its printed URL read from its output."""

    def __init__(self, sshd: SshServer, config: Path, *extra: str, remote: str = REMOTE_METASCOPE):
        command = [sys.executable, "-m", "edge", "live", ALIAS, "-F", str(sshd.ssh_config),
                   "--remote-command", remote, "--remote-config", str(config), *extra]  # fmt: skip
        # Ctrl-C works in the terminal a person runs it from, whatever the test runner was started
        # with (a runner started in the background by a non-interactive shell ignores SIGINT, and its
        # children inherit that: then Ctrl-C here would never end it).
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()
        # Its stderr is read as it comes, as a terminal would: left unread, a full pipe (ssh's
        # messages passed on) blocks the command's writes, and then its exit on Ctrl-C.
        self.errors: list[str] = []
        self.error_reader = threading.Thread(target=lambda: self.errors.extend(self.process.stderr), daemon=True)
        self.error_reader.start()

    def url(self) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.process.poll() is None, self.stderr()
                continue
            if "http://" in line:
                return line[line.index("http://") :].split()[0]
        raise AssertionError("metascope live printed no URL")

    def stderr(self) -> str:
        self.error_reader.join(10)
        return "".join(self.errors)

    def ctrl_c(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(30)
        return code, self.stderr()


def fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def text_of(dom: str, element_id: str) -> str:
    start = dom.index(f'id="{element_id}"')
    return dom[dom.index(">", start) + 1 : dom.index("<", start)]


def screenshot(url: str, path: Path) -> np.ndarray:
    result = browser("--window-size=1100,760", f"--screenshot={path}", url)  # once the first frame is in
    assert result.returncode == 0 and path.is_file(), result.stderr[-2000:]
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.int16)


def test_a_desktop_browser_watches_the_rig_through_an_ssh_forward(sshd: SshServer, rig: Rig, tmp_path: Path) -> None:
    live = Live(sshd, rig.config)
    url = live.url()
    assert url.startswith("http://127.0.0.1:")

    first = fetch_json(url + "status.json")
    later = wait_until(lambda: (s := fetch_json(url + "status.json"))["run"]["counters"]["frames"]
                       > first["run"]["counters"]["frames"] + 5 and s, "the counts grow")  # fmt: skip
    assert later["run"]["counters"]["views"] >= first["run"]["counters"]["views"]
    assert later["frame"]["number"] > first["frame"]["number"] and later["frame"]["focus"] > 0

    result = browser("--virtual-time-budget=2000", "--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert int(text_of(dom, "shown")) >= 2, "the page took one frame after another"
    assert int(text_of(dom, "frame-number")) > first["frame"]["number"]
    assert float(text_of(dom, "focus")) > 0 and "frames a second" in dom
    # The folder's and the bad file's names are markup: shown as written, never parsed.
    heading = dom[dom.index("<h1>") : dom.index("</h1>")]
    assert 'rig &lt;b&gt;one&lt;b&gt; &amp; "co"' in heading
    assert "<b>one" not in dom and "onerror=alert" not in dom.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in dom[dom.index('id="warnings"') :], "the warning is shown"

    frame_area = (slice(8, 488), slice(8, 648))  # the frame, top left, at its 640x480
    before = screenshot(url, tmp_path / "before.png")[frame_area]
    assert before.max() - before.min() > 50, "a frame is shown, not a blank"
    # The rig loops over REPLAYED_FRAMES images, so a later screenshot can land on the same
    # image by chance (1 in 6): a few later screenshots, each after newer frames, must show another.
    changes = []
    for attempt in range(4):
        shown = fetch_json(url + "status.json")["frame"]["number"]
        wait_until(lambda shown=shown: fetch_json(url + "status.json")["frame"]["number"] > shown + 2, "newer frames")
        after = screenshot(url, tmp_path / f"after{attempt}.png")[frame_area]
        changes.append(float(np.abs(before - after).mean()))
        if changes[-1] > 1.0:
            break
    assert changes[-1] > 1.0, f"the frame shown changes (mean differences {changes})"

    code, err = live.ctrl_c()
    assert code == 0, err
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the forward ended with it


def test_the_rig_stops_in_its_budget_though_a_client_hangs(sshd: SshServer, rig: Rig) -> None:
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(str(rig.socket))
    stuck.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")  # and never reads
    frames = rig.frames()
    wait_until(lambda: rig.frames() > frames + 10, "the rig goes on while the client hangs")
    rig.process.send_signal(signal.SIGTERM)
    assert rig.process.wait(stop_budget_s()) == 0
    stuck.close()
    assert not rig.socket.exists(), "the socket goes with the run"

    gone = subprocess.run([sys.executable, "-m", "edge", "live", ALIAS, "-F", str(sshd.ssh_config), "--remote-command",
                           REMOTE_METASCOPE, "--remote-config", str(rig.config)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert gone.returncode == 1 and "is the service (metascope run) running?" in gone.stderr, gone.stderr
    unreachable = subprocess.run([sys.executable, "-m", "edge", "live", DEAD_ALIAS, "-F", str(sshd.ssh_config)],
                                 capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert unreachable.returncode == 1 and f"cannot reach {DEAD_ALIAS} over ssh" in unreachable.stderr


def test_doctor_live_is_reached_from_the_desktop(sshd: SshServer, fake_camera, tiny_model, tmp_path, monkeypatch):
    """The service stopped, `doctor --capture N --live` holds the camera and serves the page on
    the login user's runtime folder; `metascope live HOST --doctor` finds it through status."""
    monkeypatch.setattr(log, "handlers", [])  # run's logging to this test's stderr ends with the test
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # what pam_systemd gives an ssh login
    config = tmp_path / "pi.toml"
    config.write_text(toml_text({"state_dir": str(tmp_path / "state"), "model": {"path": str(tiny_model[0])},
                                 "source": {"kind": "picamera2", "width": 320, "height": 240},
                                 "camera": {"frame_rate": 30.0}}))  # fmt: skip
    assert main(["run", "--config", str(config), "--source", "synthetic", "--max-frames", "2"]) == 0  # a rig that ran
    seen: dict[str, Any] = {}

    def desktop() -> None:
        try:
            live = Live(sshd, config, "--doctor", remote=f"env XDG_RUNTIME_DIR={runtime} {REMOTE_METASCOPE}")
            url = live.url()
            first = fetch_json(url + "status.json")
            seen["later"] = wait_until(lambda: (s := fetch_json(url + "status.json"))["frame"]["number"]
                                       > first["frame"]["number"] and s, "doctor's frames come")  # fmt: skip
            seen["first"], seen["ended"] = first, live.ctrl_c()
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in doctor's terminal

    # Ctrl-C in doctor's terminal raises KeyboardInterrupt, even where this runner was started
    # ignoring SIGINT (in the background by a non-interactive shell).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        thread = threading.Thread(target=desktop, daemon=True)
        thread.start()
        code = main(["doctor", "--config", str(config), "--model", str(tiny_model[0]), "--capture", "3", "--live"])
        thread.join(30)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0
    assert seen["first"]["run"]["state"].startswith("doctor") and seen["later"]["frame"]["width"] == 320
    assert seen["ended"][0] == 0, seen["ended"][1]
    assert not (runtime / "metascope-live.sock").exists()
