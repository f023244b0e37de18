"""`metascope run --source picamera2` on tests/fakes.py's FakePicamera2, for the soak: the fake is
installed as the camera_fake fixture installs it, and files in $SOAK_CAMERA_CONTROL steer it while
the service runs: ``busy`` (another process holds the camera: opening fails with EBUSY) and
``stall`` (every capture stays pending: no frame comes)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from fake_site.registered_cameras import CAMERAS_ENV  # noqa: E402
from fakes import FakeCameraManager, FakeLibcamera, FakePicamera2  # noqa: E402

import edge.capture.picamera as picamera_module  # noqa: E402
from edge.cli import main  # noqa: E402


def follow(control: Path) -> None:
    """Set the fake's state from the control files, every 50 ms, for the process's life."""
    while True:
        FakePicamera2.busy = (control / "busy").exists()
        stalled = (control / "stall").exists()
        FakePicamera2.behaviour = "hang" if stalled else "ok"
        if stalled:
            FakePicamera2.release.clear()
        else:
            FakePicamera2.release.set()
        time.sleep(0.05)


def install() -> None:
    FakePicamera2.behaviour, FakePicamera2.busy, FakePicamera2.version = "ok", False, (0, 3, 36)
    FakePicamera2.lores_adjust, FakePicamera2.tuning_files, FakePicamera2.instances = None, {}, []
    FakePicamera2.cameras = [{"Model": "imx477", "Num": 0}]
    FakePicamera2.release = threading.Event()
    FakePicamera2._cm = FakeCameraManager()
    picamera_module.import_picamera2 = lambda: FakePicamera2
    picamera_module.import_libcamera = lambda: FakeLibcamera
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS / "fake_site"), os.environ.get("PYTHONPATH")]))
    os.environ[CAMERAS_ENV] = json.dumps(FakePicamera2.cameras)


if __name__ == "__main__":
    install()
    threading.Thread(target=follow, args=(Path(os.environ["SOAK_CAMERA_CONTROL"]),), daemon=True).start()
    sys.exit(main(sys.argv[1:]))
