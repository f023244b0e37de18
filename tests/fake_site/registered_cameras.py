"""Which cameras libcamera's camera manager registers when it starts: shared by tests/fakes.py
(in the test process) and the fake picamera2 and libcamera packages beside this file, which the
camera-listing child (edge/capture/picamera.py, list_cameras) imports with this folder on its
PYTHONPATH. Standard library only: the child must start fast.

The cameras are given as their libcamera properties (Model, ColorFilterArrangement, Location,
Rotation), in the environment variable CAMERAS_ENV (JSON) for the child.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

CAMERAS_ENV = "METASCOPE_FAKE_CAMERAS"
TUNING_ENV = "LIBCAMERA_RPI_TUNING_FILE"
# libcamera src/libcamera/property_ids_draft.yaml, ColorFilterArrangement: RGGB 0 ... MONO 5.
RGGB, MONO = 0, 5


def camera_id(properties: Mapping[str, Any]) -> str:
    """Camera.id as the Pi's unicam/CFE pipeline names it: the sensor's device-tree path."""
    return properties.get("Id") or f"/base/axi/pcie@120000/rp1/i2c@88000/{properties['Model']}@1a"


def registered(cameras: list[Mapping[str, Any]], environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The cameras a camera manager starting now registers, with their properties.

    A non-empty LIBCAMERA_RPI_TUNING_FILE is the tuning of every Raspberry Pi camera (libcamera
    v0.5.2+rpt20250903 src/libcamera/ipa_proxy.cpp, ipaConfigurationFile: the variable wins over
    every folder). When that file cannot be read, IpaBase::init fails ("Failed to load tuning data
    file", src/ipa/rpi/common/ipa_base.cpp) and PipelineHandlerBase::registerCamera gives up on
    the camera ("Failed to load a suitable IPA library", src/libcamera/pipeline/rpi/common/
    pipeline_base.cpp): the manager lists no camera at all.
    """
    tuning = environ.get(TUNING_ENV, "")
    if tuning and not os.path.isfile(tuning):
        return []
    return [
        {"ColorFilterArrangement": RGGB, "Location": 2, "Rotation": 0, **camera, "Id": camera_id(camera)}
        for camera in cameras
    ]


def global_camera_info(cameras: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Picamera2.global_camera_info() (picamera2 0.3.36 picamera2.py lines 296-312): Model,
    Location and Rotation from the camera's properties, its Id, and Num (its index in the
    manager's list); nothing else, so not the colour filter arrangement. picamera2 then sorts
    by Id (USB cameras last); the fake keeps the given order (one camera in every test)."""
    keep = ("Model", "Location", "Rotation")
    return [
        {**{name: camera[name] for name in keep if name in camera}, "Id": camera["Id"], "Num": num}
        for num, camera in enumerate(cameras)
    ]


def cameras_from_environment() -> list[dict[str, Any]]:
    """What the test process set for the child (CAMERAS_ENV), as the child's manager sees it."""
    return registered(json.loads(os.environ.get(CAMERAS_ENV, "[]")), os.environ)
