"""picamera2 as the camera-listing child sees it (tests only; see ../registered_cameras.py)."""

from __future__ import annotations

from typing import Any

from registered_cameras import cameras_from_environment, global_camera_info


class Picamera2:
    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return global_camera_info(cameras_from_environment())
