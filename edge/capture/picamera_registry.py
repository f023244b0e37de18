"""What a failed ``Picamera2()`` leaves in picamera2's per-process camera registry, removed.

``Picamera2.__init__`` registers the new object in the class's camera manager (``Picamera2._cm``)
under the camera's number *before* it acquires the camera (picamera2 0.3.29 picamera2.py lines
330-342, 0.3.36 lines 344-356: ``self._cm.add`` before ``self._open_camera``), and ``close()`` of
an object whose camera never opened returns before ``_cm.cleanup`` (0.3.29 line 690, 0.3.36 line
712). Left there, the object receives every completed request of that camera number
(``CameraManager.handle_request`` delivers to ``self.cameras[req.cookie]``), so a camera open
under that number in this process stops getting frames; the manager's listener thread keeps
running for it; and its wake-up pipe (line 338) stays open, one file descriptor per failed try.

Private attributes of picamera2 are read defensively: a version without them is left alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("metascope")


def registered_cameras(picamera2_class: Any) -> dict[int, Any]:
    """A copy of the registry (camera number -> Picamera2 object); empty when there is none."""
    cameras = getattr(getattr(picamera2_class, "_cm", None), "cameras", None)
    return dict(cameras) if isinstance(cameras, dict) else {}


def forget_failed_open(picamera2_class: Any, before: dict[int, Any]) -> None:
    """Put the registry back as it was ``before`` the failed ``Picamera2()``, and close the pipe
    of the object it left there."""
    manager = getattr(picamera2_class, "_cm", None)
    cameras = getattr(manager, "cameras", None)
    if not isinstance(cameras, dict):
        return
    for number, camera in list(cameras.items()):
        if before.get(number) is camera or getattr(camera, "is_open", True):
            continue  # not the failed object: registered earlier, or a camera that did open
        try:
            if number in before:
                with manager._lock:  # the listener reads the registry under this lock
                    cameras[number] = before[number]
            else:
                manager.cleanup(number)  # the last one out also stops the listener thread
        except Exception as exc:  # picamera2's internals changed: say so, never fail the retry
            log.warning("camera: could not unregister the failed camera object: %s: %s", type(exc).__name__, exc)
        _close_pipe(camera)


def _close_pipe(camera: Any) -> None:
    reader, writer = getattr(camera, "notifymeread", None), getattr(camera, "notifyme_w", None)
    try:
        if reader is not None:
            reader.close()
        if isinstance(writer, int):
            os.close(writer)
    except OSError:
        pass  # already closed
