"""libcamera's Python binding as the camera-listing child sees it (tests only; see
../registered_cameras.py): CameraManager.singleton().cameras, each with its id and properties
(libcamera v0.5.2+rpt20250903 src/py/libcamera/py_main.cpp lines 134-153 and 264-275: Camera.id,
Camera.properties as a dict keyed by ControlId, whose .name is the property's name)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from registered_cameras import cameras_from_environment


@dataclass(frozen=True)
class ControlId:
    name: str


class Camera:
    def __init__(self, properties: dict[str, Any]):
        self.id = properties["Id"]
        self.properties = {ControlId(name): value for name, value in properties.items() if name != "Id"}


class CameraManager:
    @staticmethod
    def singleton() -> SimpleNamespace:
        return SimpleNamespace(cameras=[Camera(properties) for properties in cameras_from_environment()])
