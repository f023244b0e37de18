"""Test doubles for the service: a fake picamera2 and helpers to build configs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge.config import Config, config_from_dict
from edge.sources.synthetic import render_frame


class FakePicamera2:
    """Implements exactly the picamera2 calls edge.sources.picamera makes.

    ``behaviour`` (class attribute, set per test): "ok" returns YUV420 lores buffers whose rows
    are padded past the width (as real strides are); "raise" raises in capture_array; "garbage"
    returns a wrongly shaped buffer; "hang" blocks until ``release`` is set.
    """

    behaviour = "ok"
    stride_padding = 64
    release = threading.Event()
    instances: ClassVar[list[FakePicamera2]] = []
    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx477", "Num": 0}]

    def __init__(self) -> None:
        self.configured: dict[str, Any] | None = None
        self.started = self.stopped = self.closed = False
        self.captures = 0
        self._frame: np.ndarray | None = None
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return FakePicamera2.cameras

    def create_video_configuration(self, main: dict, lores: dict, buffer_count: int, controls: dict) -> dict:
        return {"main": main, "lores": lores, "buffer_count": buffer_count, "controls": controls}

    def configure(self, configuration: dict) -> None:
        self.configured = configuration

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str) -> np.ndarray:
        assert name == "lores"
        self.captures += 1
        width, height = self.configured["lores"]["size"]
        if self.behaviour == "raise":
            raise RuntimeError("camera frontend timeout")
        if self.behaviour == "garbage":
            return np.zeros((7, 3), dtype=np.uint8)
        if self.behaviour == "hang":
            FakePicamera2.release.wait()
            raise RuntimeError("released")
        if self._frame is None:
            self._frame, _ = render_frame(np.random.default_rng(1), height, width, cells=6)
        buffer = np.full((height * 3 // 2, width + self.stride_padding), 128, dtype=np.uint8)
        buffer[:height, :width] = self._frame
        buffer[:height, width:] = 255  # stride padding: must never reach the frame
        return buffer

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


def make_config(tmp_path: Path, model: str | Path | None = None, **sections: dict[str, Any]) -> Config:
    """A config with its state under tmp_path, fast commits and no scheduled snapshots."""
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "source": {"kind": "synthetic", "synthetic_cells": 6, "timeout_s": 0.3, "max_failures": 3},
        "store": {"commit_interval_s": 0.0},
        "snapshots": {"every_n_frames": 0},
    }
    if model is not None:
        data["model"] = {"path": str(model)}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config_from_dict(data, origin="test")


def toml_text(data: dict[str, Any]) -> str:
    """Just enough TOML writing for test configs (strings, numbers, booleans, lists)."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, str):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(item, list):
            return "[" + ", ".join(value(v) for v in item) + "]"
        return repr(item)

    lines = [f"{key} = {value(item)}" for key, item in data.items() if not isinstance(item, dict)]
    for key, item in data.items():
        if isinstance(item, dict):
            lines.append(f"[{key}]")
            lines.extend(f"{name} = {value(v)}" for name, v in item.items())
    return "\n".join(lines) + "\n"
