"""`doctor --capture N --live`: the live view of the camera while doctor holds it (the service
stopped), for focusing and choosing a field from a desktop (`metascope live HOST --doctor`).
Frames are taken until Ctrl-C, SIGTERM or the end of the ssh session (SIGHUP); the report then
measures the last N. The page and its server are the service's own (edge/service/live.py); the
frames carry no cells (doctor does not classify), only the focus score and grey levels.
"""

from __future__ import annotations

import os
import platform
import signal
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge.capture.base import CaptureTimeout
from edge.config import Config
from edge.paths import doctor_socket_path

FPS_FRAMES = 30  # frames a second over the last this many


@contextmanager
def stop_requested() -> Iterator[Callable[[], bool]]:
    """Yields "has a stop been asked for?": Ctrl-C, SIGTERM and SIGHUP (the ssh session closed)
    end the watching, so the camera is closed and the socket removed whatever ends it."""
    asked: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, lambda s, _f: asked.append(s)) for signum in signals}
    try:
        yield lambda: bool(asked)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def private_folder(folder: Path) -> None:
    """The fallback folder under the shared temp dir: made 0700, and refused when another user
    owns it or others may write in it (someone could put a socket of their own there)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(f"{folder} is not a folder of this user's own")


class Watched:
    """The run-like figures the page shows for doctor: frames, rate and the camera's settings."""

    def __init__(self, source: Any, config: Config):
        self.source = source
        self.requested = config.as_dict()["camera"]
        self.frames = 0
        self._times: deque[float] = deque(maxlen=FPS_FRAMES)

    def add(self) -> None:
        self.frames += 1
        self._times.append(time.monotonic())

    def status(self) -> dict[str, Any]:
        times = self._times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {
            "state": "doctor --capture --live (the service is stopped)",
            "source": self.source.description,
            "fps": round(fps, 2),
            "counters": {"frames": self.frames},
            "camera": {"applied": dict(self.source.applied), "requested": self.requested},
        }


def watch_live(source: Any, config: Config, take: Callable[..., Any]) -> str:
    """Serve every frame ``take(should_stop)`` returns until asked to stop; "" or why the live
    view could not be served (then nothing is watched and the caller measures its N frames)."""
    from edge.records import FrameResult
    from edge.service.live import LiveView

    path = doctor_socket_path()
    watched = Watched(source, config)
    view = LiveView(path, f"{platform.node()}: doctor, {source.description}", watched.status)
    try:
        if not os.environ.get("XDG_RUNTIME_DIR"):
            private_folder(path.parent)
        started = view.start()
    except OSError as exc:
        return f"cannot serve on {path}: {exc}"
    if not started:
        return f"cannot serve on {path} (the message above says why)"
    print(f"live view on {path}: on a desktop, `metascope live HOST --doctor`; Ctrl-C ends it", flush=True)
    try:
        with stop_requested() as stopped:
            while not stopped():
                try:
                    frame = take(stopped)
                except CaptureTimeout:
                    if stopped():
                        break
                    raise
                watched.add()
                view.publish(FrameResult(frame=frame, detections=[]))
    finally:
        view.stop()
    return ""
