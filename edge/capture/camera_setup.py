"""What the service asks of a Pi camera, decided without touching it: the controls (left out
where the sensor does not advertise them), the sensor mode pinned per camera model, the tuning
edit that keeps frames comparable over hours, and which failure to open is which.

Kept apart from picamera.py, which talks to picamera2, so these decisions are plain functions
of the config and of what the camera reports.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from typing import Any

from edge.capture.base import SourceError
from edge.errors import UsageError

# The full field of view, 2x2 binned, for each sensor (raspberrypi/linux drivers/media/i2c/
# <sensor>.c, supported_modes). Left to itself libcamera picks the mode closest to the main
# stream's size: imx708 at 1280x960 gets its cropped 1536x864 mode (a third of the sensor) and
# another size gets another crop, so the field of view and um/px would change with source.width.
SENSOR_MODES: dict[str, dict[str, Any]] = {
    "imx477": {"output_size": (2028, 1520), "bit_depth": 12},  # HQ camera
    "imx708": {"output_size": (2304, 1296), "bit_depth": 10},  # Camera Module 3 (wide, NoIR too)
    "imx219": {"output_size": (1640, 1232), "bit_depth": 10},  # Camera Module 2
    "ov5647": {"output_size": (1296, 972), "bit_depth": 10},  # Camera Module 1
    "imx296": {"output_size": (1456, 1088), "bit_depth": 10},  # Global shutter camera (one mode)
}

# Controls a mono sensor does not advertise; picamera2 refuses a configuration that sets a
# control the camera lacks (picamera2 0.3.36 controls.py, Controls.__setattr__: "Control ... is
# not advertised by libcamera"), so these are left out rather than failing every start.
COLOUR_ONLY_CONTROLS = ("AwbEnable", "ColourGains")

# libcamera's properties::draft::ColorFilterArrangement MONO (src/libcamera/property_ids_draft.yaml)
CFA_MONO = 5

LENS_POSITION_UNSET = -1.0  # camera.lens_position: leave the lens where the camera puts it


class CameraSettingsRejected(UsageError):
    """The camera cannot do what the config asks (the message names the key): exit 2, since
    restarting with the same config cannot help."""


class CameraUnavailable(SourceError):
    """No camera can be opened right now: none is attached, or another program holds it. Worth
    waiting for (a person focusing with rpicam-hello, a cable being reseated)."""


class CameraAbsent(CameraUnavailable):
    pass


class CameraBusy(CameraUnavailable):
    pass


def pinned_sensor_mode(model: str) -> dict[str, Any] | None:
    """The sensor mode for this camera model ("imx708_wide_noir" is an imx708), or None."""
    return SENSOR_MODES.get(model.split("_")[0])


def camera_controls(
    camera: Any, advertised: Mapping[str, Any], af_manual: Any
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(controls, the ones left out, notes for the journal) for a [camera] config section.

    Exposure, gain and white balance are locked so frames stay comparable over hours. With
    ``camera.lens_position`` set and a camera that advertises LensPosition, the lens is driven
    there (AfMode Manual); otherwise every start would move it to the tuning's default.
    """
    period_us = round(1_000_000 / camera.frame_rate)
    controls: dict[str, Any] = {
        "AeEnable": False,
        "ExposureTime": int(camera.exposure_us),
        "AnalogueGain": float(camera.analogue_gain),
        "AwbEnable": False,
        "ColourGains": (float(camera.colour_gains[0]), float(camera.colour_gains[1])),
        "FrameDurationLimits": (period_us, period_us),
    }
    left_out = [name for name in COLOUR_ONLY_CONTROLS if name not in advertised]
    for name in left_out:
        del controls[name]
    notes = []
    if left_out:
        notes.append(f"the camera does not advertise {', '.join(left_out)} (a mono sensor): left out")
    lens = camera.lens_position
    if lens != LENS_POSITION_UNSET:
        if "LensPosition" not in advertised:
            notes.append(f"camera.lens_position {lens:g} ignored: this camera has no focus control")
        else:  # its range is known only once configured: check_lens_position
            controls["AfMode"] = af_manual
            controls["LensPosition"] = float(lens)
    return controls, left_out, notes


def check_lens_position(camera: Any, advertised: Mapping[str, Any]) -> None:
    """``camera.lens_position`` against the range the camera advertises once configured. Before
    configure() libcamera advertises 0..32 for every focus motor (libcamera src/ipa/rpi/common/
    ipa_base.cpp, ipaAfControls); configure() narrows it to the tuning's rpi.af map (imx708:
    0..15, IpaBase::configure), and a position outside is silently clamped (af.cpp,
    Af::setLensPosition): the lens would sit somewhere the config does not say."""
    lens = camera.lens_position
    if lens == LENS_POSITION_UNSET or "LensPosition" not in advertised:
        return
    low, high = advertised["LensPosition"][:2]
    if not low <= lens <= high:
        raise CameraSettingsRejected(
            f"camera.lens_position: {lens:g} dioptres is outside this camera's range {low:g}..{high:g}"
        )


def tuning_name_and_dir(tuning_file: str, model: str, mono: bool = False) -> tuple[str, str | None]:
    """(file name, folder or None for libcamera's own folders) for Picamera2.load_tuning_file.
    Without a configured file, the one libcamera itself would load: <model>_mono.json for a mono
    sensor (libcamera src/libcamera/pipeline/rpi/common/pipeline_base.cpp, CameraData::loadIPA),
    whose Model has no "_mono"."""
    if not tuning_file:
        return f"{model}_mono.json" if mono else f"{model}.json", None
    if os.sep in tuning_file:
        return os.path.basename(tuning_file), os.path.dirname(tuning_file) or None
    return tuning_file, None


def disable_contrast_enhancement(tuning: dict, find_tuning_algo: Callable[[dict, str], dict]) -> bool:
    """Turn off rpi.contrast's adaptive contrast enhancement, which restretches every frame's
    tone curve from its own histogram (so a frame's grey levels depend on what else is in it).
    False when the tuning has no rpi.contrast (nothing to turn off)."""
    try:
        contrast = find_tuning_algo(tuning, "rpi.contrast")
    except (KeyError, StopIteration):
        return False
    contrast["ce_enable"] = 0
    return True


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def open_failure(exc: BaseException) -> SourceError:
    """What ``Picamera2()`` raising means. picamera2 wraps every failure in "Camera __init__
    sequence did not complete" with the real one in ``__cause__`` (picamera2 0.3.36 picamera2.py,
    Picamera2.__init__); libcamera's acquire() fails with EBUSY when another process holds the
    camera (libcamera src/py/libcamera/py_main.cpp, Camera.acquire: std::system_error, which
    pybind11 raises as RuntimeError "Failed to acquire camera: Device or resource busy"); with no
    camera, ``global_camera_info()[camera_num]`` raises IndexError before that."""
    chain = _causes(exc)
    busy_text = os.strerror(errno.EBUSY)
    if any(busy_text in str(cause) or getattr(cause, "errno", None) == errno.EBUSY for cause in chain):
        return CameraBusy(
            "camera busy: another program holds it (rpicam-hello, rpicam-still, another metascope?); "
            f"close that program ({type(exc).__name__}: {exc}; cause: {chain[-1]})"
        )
    if any(isinstance(cause, IndexError) for cause in chain):
        return CameraAbsent(f"no camera found by libcamera: {type(exc).__name__}: {exc}")
    detail = "; cause: ".join(f"{type(cause).__name__}: {cause}" for cause in chain)
    return SourceError(f"camera would not open: {detail}")
