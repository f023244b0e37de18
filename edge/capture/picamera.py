"""The Pi camera through picamera2: the low-resolution YUV420 stream's Y plane is the frame.

Brightfield/phase contrast needs only luminance, and the ISP already scales the lores stream
down, so the Pi never converts colour or resizes. The stream is configured full-range BT.601
(libcamera's sYCC), whose Y is Pillow's "L" of the same colours, so the model sees the grey
levels it was trained on (picamera2's video default is limited range: Y in 16..235). Exposure,
gain and white balance are locked, the sensor mode is pinned per model and the tuning's
adaptive contrast is off, so frames stay comparable over hours. picamera2 and libcamera are
imported only here, only when this source opens (they exist only on a Pi, from apt).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from typing import Any

import numpy as np

from edge.capture.base import BadFrame, Frame, SourceError
from edge.capture.camera_setup import (
    CFA_MONO,
    CameraAbsent,
    CameraSettingsRejected,
    camera_controls,
    check_lens_position,
    disable_contrast_enhancement,
    open_failure,
    pinned_sensor_mode,
    tuning_name_and_dir,
)
from edge.capture.latest_frame import LatestFrameCapture
from edge.capture.picamera_registry import forget_failed_open, registered_cameras
from edge.config import CameraConfig

log = logging.getLogger("metascope")

CLOSE_TIMEOUT_S = 1.0  # a wedged camera must not hold up shutdown
LIST_CAMERAS_TIMEOUT_S = 30.0
COLOUR_SPACE = "sYCC"  # libcamera.ColorSpace.Sycc(): full-range BT.601, Pillow's "L" formula
# Picamera2(tuning=dict) points this at a temporary file, deletes the file when __init__ ends and
# never clears the variable (picamera2 0.3.29-0.3.36 picamera2.py, Picamera2.__init__). libcamera
# reads it whenever a camera manager starts (ipa_proxy.cpp, ipaConfigurationFile), and a camera
# whose tuning cannot be read is not registered at all (ipa_base.cpp IpaBase::init).
TUNING_ENV = "LIBCAMERA_RPI_TUNING_FILE"


def import_picamera2() -> Any:
    """The Picamera2 class (tests replace this function with one returning a fake)."""
    from picamera2 import Picamera2

    return Picamera2


def import_libcamera() -> Any:
    """The libcamera module (tests replace this function with one returning a fake)."""
    import libcamera

    return libcamera


# global_camera_info() gives Model, Location, Rotation, Id and Num (picamera2 0.3.36 picamera2.py
# lines 296-312), not the colour filter arrangement that tells a mono sensor from a colour one of
# the same Model: that is read from the same cameras' libcamera properties.
LISTING_CHILD = """
import json
import libcamera
from picamera2 import Picamera2

cameras = Picamera2.global_camera_info()
properties = {
    camera.id: {key.name: value for key, value in camera.properties.items()}
    for camera in libcamera.CameraManager.singleton().cameras
}
for info in cameras:
    info["ColorFilterArrangement"] = properties.get(info["Id"], {}).get("ColorFilterArrangement")
print(json.dumps(cameras))
"""


def list_cameras() -> list[dict[str, Any]]:
    """``Picamera2.global_camera_info()``, asked in a child process: starting libcamera's camera
    manager in this one would fix the tuning before it is chosen (the Pi's IPA reads
    LIBCAMERA_RPI_TUNING_FILE when the manager starts: rpicam-apps PR #593, picamera2 issue
    #886). The child never inherits TUNING_ENV: left over from an earlier Picamera2(tuning=...),
    it names a deleted file and the child would find no camera."""
    code = LISTING_CHILD
    environment = {name: value for name, value in os.environ.items() if name != TUNING_ENV}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=LIST_CAMERAS_TIMEOUT_S,
            check=False,
            env=environment,
        )
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"listing the cameras took over {LIST_CAMERAS_TIMEOUT_S:g} s (libcamera hung)") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        if "No module named 'picamera2'" in done.stderr:
            raise ImportError(last)
        raise SourceError(f"libcamera could not list the cameras: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def colour_space_name(colour_space: Any) -> str:
    """libcamera's name of a colour space ("sYCC"): str() of the binding's ColorSpace is
    "<libcamera.ColorSpace 'sYCC'>" (libcamera src/py/libcamera/py_color_space.cpp, __str__)."""
    text = str(colour_space)
    prefix = "<libcamera.ColorSpace '"
    return text[len(prefix) : -2] if text.startswith(prefix) and text.endswith("'>") else text


def y_plane(yuv: Any, height: int, width: int) -> np.ndarray:
    """The Y plane of a YUV420 lores buffer: (height * 3/2, stride) rows; the first ``height``
    rows are Y, and each row may be padded past ``width`` to the stride."""
    if not isinstance(yuv, np.ndarray) or yuv.dtype != np.uint8 or yuv.ndim != 2:
        shape = getattr(yuv, "shape", None)
        raise BadFrame(f"lores buffer is not a 2-D uint8 array (got {type(yuv).__name__} {shape})")
    if yuv.shape[0] != height * 3 // 2 or yuv.shape[1] < width:
        raise BadFrame(f"lores buffer shape {list(yuv.shape)} does not hold a {width}x{height} YUV420 frame")
    return np.ascontiguousarray(yuv[:height, :width])


def _picamera2_or_source_error() -> tuple[Any, Any]:
    try:
        return import_picamera2(), import_libcamera()
    except ImportError as exc:
        raise SourceError(
            f"picamera2 is not installed ({exc}); on the Pi: sudo apt install python3-picamera2 and a venv "
            "made with --system-site-packages; on a desktop: --source synthetic (made-up cells) or "
            "--source replay:FOLDER (frames you have)"
        ) from exc


class Picamera2Source:
    def __init__(self, width: int, height: int, camera: CameraConfig, start_timeout_s: float = 2.0):
        self.width, self.height = width, height
        self.settings = camera
        self.start_timeout_s = start_timeout_s
        self.description = (
            f"picamera2 lores {width}x{height} Y plane, exposure {camera.exposure_us} us, "
            f"gain {camera.analogue_gain:g}, {camera.frame_rate:g} fps"
        )
        # What the camera actually runs with, read back once it is configured (logged and
        # recorded with the run): model, sensor mode, ScalerCrop, colour space, lores stream...
        self.applied: dict[str, Any] = {}
        self._camera: Any = None
        self._capture: LatestFrameCapture | None = None
        self._af_manual: Any = None

    def open(self) -> None:
        picamera2_class, libcamera = _picamera2_or_source_error()
        try:
            cameras = list_cameras()
        except ImportError as exc:
            raise SourceError(f"picamera2 is not installed ({exc})") from exc
        if not cameras:
            raise CameraAbsent(
                "no camera found by libcamera: check the ribbon cable (both ends, contacts the right way "
                "round) and `rpicam-hello --list-cameras`"
            )
        model = str(cameras[0].get("Model", "unknown"))
        tuning = self._tuning(picamera2_class, model, cameras[0].get("ColorFilterArrangement") == CFA_MONO)
        registered = registered_cameras(picamera2_class)
        try:
            camera = picamera2_class(tuning=tuning) if tuning is not None else picamera2_class()
        except Exception as exc:
            forget_failed_open(picamera2_class, registered)
            raise open_failure(exc) from exc
        finally:
            os.environ.pop(TUNING_ENV, None)  # the camera has read it; the file is gone
        try:
            self._configure(camera, libcamera, model)
            camera.start()
            self._read_scaler_crop(camera)
        except (SourceError, CameraSettingsRejected):
            self._close_camera(camera)
            raise
        except Exception as exc:
            self._close_camera(camera)
            raise SourceError(f"camera would not start: {type(exc).__name__}: {exc}") from exc
        self.description = f"picamera2 {model} {self._mode_text()}, " + self.description.removeprefix("picamera2 ")
        self._camera = camera
        self._capture = LatestFrameCapture(self._grab, name="picamera2-capture").start()

    def _tuning(self, picamera2_class: Any, model: str, mono: bool) -> dict | None:
        """The camera's tuning with adaptive contrast off, or None (libcamera's default file) when
        the sensor's own file cannot be found; a configured file that cannot be read is exit 2."""
        configured = self.settings.tuning_file
        name, folder = tuning_name_and_dir(configured, model, mono)
        try:
            tuning = picamera2_class.load_tuning_file(name, dir=folder)
        except (RuntimeError, OSError, ValueError) as exc:
            if configured:
                raise CameraSettingsRejected(f"camera.tuning_file: cannot load {configured!r}: {exc}") from exc
            log.warning(
                "camera: tuning file %s not found (%s): libcamera's default, contrast enhancement on", name, exc
            )
            self.applied["tuning"] = f"{name} (not found: libcamera default)"
            return None
        turned_off = disable_contrast_enhancement(tuning, picamera2_class.find_tuning_algo)
        self.applied["tuning"] = name + (", rpi.contrast ce_enable 0" if turned_off else ", no rpi.contrast")
        return tuning

    def _configure(self, camera: Any, libcamera: Any, model: str) -> None:
        advertised = camera.camera_controls
        self._af_manual = libcamera.controls.AfModeEnum.Manual
        controls, left_out, notes = camera_controls(self.settings, advertised, self._af_manual)
        for note in notes:
            log.warning("camera: %s", note)
        sensor = pinned_sensor_mode(model)
        if sensor is None:
            log.warning("camera: no sensor mode pinned for %s: libcamera chooses one (field of view may change)", model)
        # The main stream must be at least as large as lores; YUV420 keeps its buffers small.
        configuration = camera.create_video_configuration(
            main={"size": (self.width * 2, self.height * 2), "format": "YUV420"},
            lores={"size": (self.width, self.height), "format": "YUV420"},
            buffer_count=4,
            controls=controls,
            colour_space=libcamera.ColorSpace.Sycc(),
            sensor=dict(sensor) if sensor else {},
        )
        camera.configure(configuration)
        self._check_configured(camera.camera_configuration(), camera.camera_controls)
        self.applied.update(model=model, controls_left_out=left_out, lens_position=controls.get("LensPosition"))

    def _check_configured(self, configured: dict, advertised: dict) -> None:
        """What libcamera made of the request (it adjusts rather than refuses; picamera2 0.3.36
        picamera2.py, configure_ -> _update_camera_config writes the validated values back)."""
        lores = configured["lores"]
        size = tuple(lores["size"])
        if size != (self.width, self.height):
            raise CameraSettingsRejected(
                f"source.width, source.height: the camera adjusted the lores stream from {self.width}x{self.height} "
                f"to {size[0]}x{size[1]}; set them to {size[0]} and {size[1]}"
            )
        colour_space = colour_space_name(configured["colour_space"])
        if COLOUR_SPACE not in colour_space:
            raise SourceError(f"the camera delivers colour space {colour_space}, not {COLOUR_SPACE}: grey levels "
                              "would not match the model's training")  # fmt: skip
        check_lens_position(self.settings, advertised)
        fastest_us = advertised.get("FrameDurationLimits", (0,))[0]
        period_us = 1_000_000 / self.settings.frame_rate
        if fastest_us and period_us < fastest_us:
            raise CameraSettingsRejected(
                f"camera.frame_rate: {self.settings.frame_rate:g} fps is faster than this sensor mode allows "
                f"({1_000_000 / fastest_us:.1f} fps)"
            )
        sensor = configured.get("sensor") or {}
        self.applied.update(
            sensor_mode={"output_size": list(sensor.get("output_size", ())), "bit_depth": sensor.get("bit_depth")},
            colour_space=colour_space,
            lores={"size": list(size), "stride": lores.get("stride")},
        )

    def _read_scaler_crop(self, camera: Any) -> None:
        """ScalerCrop (the sensor area the frame shows) from the first frame's metadata. A camera
        that sends no frame in time is left to the capture timeout (the job stays queued, and
        close() cancels it)."""
        try:
            metadata = camera.capture_metadata(wait=self.start_timeout_s)
        except Exception as exc:  # concurrent.futures.TimeoutError from Job.get_result, or a camera error
            log.warning("camera: no frame metadata within %.1f s (%s): ScalerCrop unknown", self.start_timeout_s, exc)
            self.applied["scaler_crop"] = None
            return
        crop = metadata.get("ScalerCrop")
        self.applied["scaler_crop"] = list(crop) if crop is not None else None

    def _mode_text(self) -> str:
        mode = self.applied.get("sensor_mode") or {}
        size = "x".join(str(v) for v in mode.get("output_size") or []) or "?"
        return f"sensor mode {size} {mode.get('bit_depth')}-bit, ScalerCrop {self.applied.get('scaler_crop')}"

    def lens_range(self) -> tuple[float, float]:
        """(farthest, closest) LensPosition in dioptres; (0, 0) without a focus motor."""
        limits = self._camera.camera_controls.get("LensPosition") if self._camera is not None else None
        return (float(limits[0]), float(limits[1])) if limits else (0.0, 0.0)

    def set_lens_position(self, dioptres: float) -> None:
        """Move the lens while running (`metascope doctor --focus`); takes effect a few frames later."""
        self._camera.set_controls({"AfMode": self._af_manual, "LensPosition": float(dioptres)})

    def _grab(self) -> np.ndarray:
        return y_plane(self._camera.capture_array("lores"), self.height, self.width)

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        if self._capture is None:
            raise SourceError("camera is not open")
        return self._capture.next_frame(timeout_s, should_stop)

    def close(self) -> None:
        capture, self._capture = self._capture, None
        camera, self._camera = self._camera, None
        if capture is not None:
            capture.stop(join_timeout_s=0)  # no new capture after the one pending now
        if camera is not None:
            self._close_camera(camera, capture)

    @staticmethod
    def _close_camera(camera: Any, capture: LatestFrameCapture | None = None) -> None:
        """cancel_all_and_flush(), then close(). Plain stop() would queue behind a capture still
        waiting for a frame and never return: with the event loop running, Picamera2.stop()
        dispatches stop_ as a job after the pending ones (picamera2 0.3.36 picamera2.py, stop ->
        dispatch_functions). Cancelling fails that capture with CancelledError, and close()
        stops the event loop before stopping the camera directly (close -> stop_preview)."""

        def close() -> None:
            try:
                camera.cancel_all_and_flush()
                if capture is not None:
                    capture.stop(CLOSE_TIMEOUT_S)
            finally:
                camera.close()

        closer = threading.Thread(target=close, name="picamera2-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S * 2)  # libcamera itself may hang; never block shutdown on it
        if closer.is_alive():
            log.warning("camera: close did not finish within %.0f s; left to exit", CLOSE_TIMEOUT_S * 2)


def camera_present() -> tuple[bool, str]:
    """For `metascope doctor`: is picamera2 importable, and does libcamera list a camera?"""
    try:
        import_picamera2()
        cameras = list_cameras()
    except ImportError as exc:
        return False, f"picamera2 not importable: {exc}"
    except SourceError as exc:
        return False, str(exc)
    if not cameras:
        return False, "libcamera lists no camera"
    return True, ", ".join(str(info.get("Model", info)) for info in cameras)
