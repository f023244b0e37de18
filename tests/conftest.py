"""Shared fixtures. The tiny model is a real model trained on synthetic cells and exported
through train/export.py, committed in tests/models/ (`make tiny-model`), so the edge tests run
a real TFLite interpreter without TensorFlow. Tests that need TensorFlow live in tests/train/."""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from edge.classify.classifier import Classifier

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("METASCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))


TINY_MODEL = REPO / "tests" / "models" / "tiny.tflite"


def wait_until(condition: Callable[[], Any], what: str, limit_s: float = 60.0) -> Any:
    """Poll until ``condition`` gives something true, and return it. The limit is a safety net
    against a hang only: tests count what happened, they do not time it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="session")
def tiny_model() -> tuple[Path, Path]:
    """(int8 .tflite path, float .tflite path) of the committed tiny model."""
    float_model = TINY_MODEL.with_name("tiny.float.tflite")
    for path in (TINY_MODEL, float_model):
        assert path.is_file() and path.with_suffix(".json").is_file(), f"{path} or its card is missing: make tiny-model"
    return TINY_MODEL, float_model


@pytest.fixture(scope="module")
def classifier(tiny_model) -> Classifier:
    """The tiny model's Classifier, loaded once a module (a test that changes its card puts it back)."""
    from edge.classify.classifier import Classifier

    return Classifier.load(tiny_model[0])


@pytest.fixture
def model_copy(tiny_model, tmp_path: Path) -> Path:
    """A private copy of the int8 model and card that a test may damage."""
    source = Path(tiny_model[0])
    target = tmp_path / source.name
    target.write_bytes(source.read_bytes())
    target.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    return target


@pytest.fixture
def fake_camera(monkeypatch):
    """picamera2 replaced by tests/fakes.py's FakePicamera2 (no libcamera off a Pi). The cameras
    are listed as on a Pi, by list_cameras' own child process, which finds the fake picamera2 and
    libcamera of tests/fake_site first on its PYTHONPATH and inherits the environment."""
    import json
    import threading

    from fake_site.registered_cameras import CAMERAS_ENV, TUNING_ENV
    from fakes import FakeCameraManager, FakeLibcamera, FakePicamera2

    import edge.capture.picamera as picamera_module

    FakePicamera2.behaviour = "ok"
    FakePicamera2.busy = False
    FakePicamera2.version = (0, 3, 36)
    FakePicamera2.lores_adjust = None
    FakePicamera2.cameras = [{"Model": "imx477", "Num": 0}]
    FakePicamera2.tuning_files = {}
    FakePicamera2.instances = []
    FakePicamera2.release = threading.Event()
    FakePicamera2._cm = FakeCameraManager()
    monkeypatch.setattr(picamera_module, "import_picamera2", lambda: FakePicamera2)
    monkeypatch.setattr(picamera_module, "import_libcamera", lambda: FakeLibcamera)
    # picamera2 sets LIBCAMERA_RPI_TUNING_FILE in this process: whatever a test leaves, undone
    monkeypatch.setenv(TUNING_ENV, "")
    monkeypatch.delenv(TUNING_ENV)
    fake_site = str(REPO / "tests" / "fake_site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [fake_site, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(CAMERAS_ENV, "[]")
    list_cameras = picamera_module.list_cameras

    def list_cameras_in_a_child():
        os.environ[CAMERAS_ENV] = json.dumps(FakePicamera2.cameras)  # what libcamera would find now
        return list_cameras()

    monkeypatch.setattr(picamera_module, "list_cameras", list_cameras_in_a_child)
    yield FakePicamera2
    FakePicamera2.release.set()  # frees any capture thread a "hang" test left blocked


@pytest.fixture
def notify_socket(tmp_path: Path):
    """(listener, address): a datagram socket where a Notifier (NOTIFY_SOCKET) sends to."""
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    listener.bind(address)
    yield listener, address
    listener.close()


def received(listener) -> list[str]:
    """Every notify message waiting on ``listener``, without waiting for more."""
    messages = []
    listener.setblocking(False)
    while True:
        try:
            messages.append(listener.recv(4096).decode())
        except BlockingIOError:
            return messages


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """A real sshd on loopback (tests/sshd_harness.py), shared by the deploy tests."""
    from sshd_harness import require_tools, running_sshd

    require_tools("rsync")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on a unix socket (tests/postgres_harness.py), shared by the tests
    that pull into one or report from one: each makes its own database."""
    from postgres_harness import running_postgres, unavailable

    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed in this python (metascope's postgres extra: make venv)")
    with running_postgres() as server:
        yield server


# The last release before the tables were renamed (schema 5: views in `cells`, cells in `tracks`).
RELEASE_0_3 = "22c2942"
# The last pull.sh that kept pulled rows in CSV files only (layout 3), before results.sqlite.
CSV_ONLY_PULL = "1a3dae0"


def _release(tmp_path_factory: pytest.TempPathFactory, commit: str, name: str) -> Path:
    """That commit's edge/ and deploy/, taken from this repository's history."""
    target = tmp_path_factory.mktemp(name)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "edge", "deploy"], capture_output=True, timeout=60
    )
    if archive.returncode != 0:
        reason = f"this checkout has no git history with {commit}: {archive.stderr.decode()[:200]}"
        if os.environ.get("METASCOPE_CI") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    (target / "release.tar").write_bytes(archive.stdout)
    with tarfile.open(target / "release.tar") as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="session")
def release_0_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That release's edge/ and deploy/: a real older Pi and an older desktop's pull.sh, for the
    tests that mix versions."""
    return _release(tmp_path_factory, RELEASE_0_3, "release-0.3")


@pytest.fixture(scope="session")
def csv_only_pull(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The desktop of the last version whose pull.sh wrote CSV files only, whose folders carry over."""
    return _release(tmp_path_factory, CSV_ONLY_PULL, "csv-only-pull")
