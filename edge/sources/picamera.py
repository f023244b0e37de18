"""The Pi camera through picamera2: the low-resolution YUV420 stream's Y plane is the frame.

Brightfield/phase contrast needs only luminance, and the ISP already scales the lores stream
down, so the Pi never converts colour or resizes. Exposure, gain and white balance are locked
from the config so frames stay comparable over hours. picamera2 is imported only here, only
when this source opens (it exists only on a Pi, from apt).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from edge.sources.base import BadFrame, Frame, SourceError
from edge.sources.capture import LatestFrameCapture

CLOSE_TIMEOUT_S = 1.0  # a wedged camera must not hold up shutdown


def import_picamera2() -> Any:
    """The Picamera2 class (tests replace this function with one returning a fake)."""
    from picamera2 import Picamera2

    return Picamera2


def camera_controls(exposure_us: int, analogue_gain: float, colour_gains: list[float], frame_rate: float) -> dict:
    period_us = round(1_000_000 / frame_rate)
    return {
        "AeEnable": False,
        "ExposureTime": int(exposure_us),
        "AnalogueGain": float(analogue_gain),
        "AwbEnable": False,
        "ColourGains": (float(colour_gains[0]), float(colour_gains[1])),
        "FrameDurationLimits": (period_us, period_us),
    }


def y_plane(yuv: Any, height: int, width: int) -> np.ndarray:
    """The Y plane of a YUV420 lores buffer: (height * 3/2, stride) rows; the first ``height``
    rows are Y, and each row may be padded past ``width`` to the stride."""
    if not isinstance(yuv, np.ndarray) or yuv.dtype != np.uint8 or yuv.ndim != 2:
        shape = getattr(yuv, "shape", None)
        raise BadFrame(f"lores buffer is not a 2-D uint8 array (got {type(yuv).__name__} {shape})")
    if yuv.shape[0] != height * 3 // 2 or yuv.shape[1] < width:
        raise BadFrame(f"lores buffer shape {list(yuv.shape)} does not hold a {width}x{height} YUV420 frame")
    return np.ascontiguousarray(yuv[:height, :width])


class Picamera2Source:
    def __init__(
        self,
        width: int,
        height: int,
        exposure_us: int,
        analogue_gain: float,
        colour_gains: list[float],
        frame_rate: float,
    ):
        self.width, self.height = width, height
        self.controls = camera_controls(exposure_us, analogue_gain, colour_gains, frame_rate)
        self.description = (
            f"picamera2 lores {width}x{height} Y plane, exposure {exposure_us} us, gain {analogue_gain:g}, "
            f"{frame_rate:g} fps"
        )
        self._camera: Any = None
        self._capture: LatestFrameCapture | None = None

    def open(self) -> None:
        try:
            picamera2_class = import_picamera2()
        except ImportError as exc:
            raise SourceError(
                f"picamera2 is not installed ({exc}); on the Pi: sudo apt install python3-picamera2 and a venv "
                "made with --system-site-packages"
            ) from exc
        try:
            camera = picamera2_class()
        except Exception as exc:  # picamera2 raises IndexError/RuntimeError when no camera is attached
            raise SourceError(f"no camera found by libcamera: {type(exc).__name__}: {exc}") from exc
        try:
            # The main stream must be at least as large as lores; YUV420 keeps its buffers small.
            configuration = camera.create_video_configuration(
                main={"size": (self.width * 2, self.height * 2), "format": "YUV420"},
                lores={"size": (self.width, self.height), "format": "YUV420"},
                buffer_count=4,
                controls=self.controls,
            )
            camera.configure(configuration)
            camera.start()
        except Exception as exc:
            self._close_camera(camera)
            raise SourceError(f"camera would not start: {type(exc).__name__}: {exc}") from exc
        self._camera = camera
        self._capture = LatestFrameCapture(self._grab, name="picamera2-capture").start()

    def _grab(self) -> np.ndarray:
        return y_plane(self._camera.capture_array("lores"), self.height, self.width)

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        if self._capture is None:
            raise SourceError("camera is not open")
        return self._capture.next_frame(timeout_s, should_stop)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.stop(CLOSE_TIMEOUT_S)
            self._capture = None
        if self._camera is not None:
            self._close_camera(self._camera)
            self._camera = None

    @staticmethod
    def _close_camera(camera: Any) -> None:
        def close() -> None:
            try:
                camera.stop()
            finally:
                camera.close()

        closer = threading.Thread(target=close, name="picamera2-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)  # a stalled camera can block stop(); never block shutdown on it


def camera_present() -> tuple[bool, str]:
    """For `metascope doctor`: is picamera2 importable, and does libcamera list a camera?"""
    try:
        picamera2_class = import_picamera2()
    except ImportError as exc:
        return False, f"picamera2 not importable: {exc}"
    try:
        cameras = picamera2_class.global_camera_info()
    except Exception as exc:
        return False, f"libcamera could not list cameras: {type(exc).__name__}: {exc}"
    if not cameras:
        return False, "libcamera lists no camera"
    return True, ", ".join(str(info.get("Model", info)) for info in cameras)
