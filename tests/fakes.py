"""Test doubles for the service: a fake picamera2 and helpers to build configs."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from edge.capture.synthetic import render_frame
from edge.config import Config, config_from_dict


class FakeColorSpace:
    """libcamera.ColorSpace: compared by value, printed as libcamera's toString() ("sYCC")."""

    def __init__(self, name: str):
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeColorSpace) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def Sycc() -> FakeColorSpace:  # libcamera's spelling
        return FakeColorSpace("sYCC")

    @staticmethod
    def Smpte170m() -> FakeColorSpace:
        return FakeColorSpace("SMPTE170M")

    @staticmethod
    def Rec709() -> FakeColorSpace:
        return FakeColorSpace("Rec709")


# The libcamera module as edge.capture.picamera uses it: ColorSpace and controls.AfModeEnum
# (libcamera src/libcamera/control_ids_core.yaml: AfModeManual = 0).
FakeLibcamera = SimpleNamespace(
    ColorSpace=FakeColorSpace, controls=SimpleNamespace(AfModeEnum=SimpleNamespace(Manual=0, Auto=1, Continuous=2))
)

# Each model's raw modes (size, bit depth, fastest fps), as raspberrypi/linux drivers/media/i2c
# <sensor>.c lists them, and the controls it advertises: (min, max, default) as picamera2's
# camera_controls gives them. A mono sensor advertises no AwbEnable or ColourGains; only a
# camera with a focus motor advertises AfMode and LensPosition.
COMMON_CONTROLS = {
    "AeEnable": (False, True, True),
    "ExposureTime": (26, 112_015_443, 20_000),
    "AnalogueGain": (1.0, 16.0, 1.0),
    "FrameDurationLimits": (0, 1_000_000_000, 33_333),  # min replaced by the mode's at configure
    "ScalerCrop": ((0, 0, 64, 64), (0, 0, 4056, 3040), (0, 0, 4056, 3040)),
}
COLOUR_CONTROLS = {"AwbEnable": (False, True, True), "ColourGains": (0.0, 32.0, None)}
FOCUS_CONTROLS = {"AfMode": (0, 2, 0), "LensPosition": (0.0, 15.0, 1.0)}
SENSORS: dict[str, dict[str, Any]] = {
    "imx477": {
        "modes": [
            ((1332, 990), 10, 120.0),
            ((2028, 1080), 12, 50.0),
            ((2028, 1520), 12, 40.0),
            ((4056, 3040), 12, 10.0),
        ],
        "controls": COMMON_CONTROLS | COLOUR_CONTROLS,
    },
    "imx708": {
        "modes": [((1536, 864), 10, 120.0), ((2304, 1296), 10, 56.0), ((4608, 2592), 10, 14.0)],
        "controls": COMMON_CONTROLS | COLOUR_CONTROLS | FOCUS_CONTROLS,
    },
    "imx296_mono": {"modes": [((1456, 1088), 10, 60.0)], "controls": dict(COMMON_CONTROLS)},
}


def fake_tuning(model: str) -> dict[str, Any]:
    """A version 2 tuning file as libcamera ships them (src/ipa/rpi/pisp/data/imx477.json):
    rpi.contrast with ce_enable 1."""
    return {
        "version": 2.0,
        "target": "pisp",
        "algorithms": [
            {"rpi.black_level": {"black_level": 4096}},
            {"rpi.contrast": {"ce_enable": 1, "gamma_curve": [0, 0, 65535, 65535]}},
        ],
        "model": model,
    }


class FakePicamera2:
    """The picamera2 calls edge.capture.picamera makes, behaving as picamera2 0.3.36 does (each
    behaviour names the function in raspberrypi/picamera2 picamera2/picamera2.py it mirrors).

    ``behaviour`` (class attribute, set per test): "ok" returns YUV420 lores buffers whose rows
    are padded past the width (as real strides are); "raise" raises in capture_array; "garbage"
    returns a wrongly shaped buffer; "hang" leaves every capture pending (no frame comes) until
    it is cancelled or ``release`` is set. ``busy`` makes opening fail as when another process
    holds the camera; ``cameras`` is what global_camera_info() lists (empty: none attached).
    """

    behaviour = "ok"
    busy = False
    stride_padding = 64
    lores_adjust: tuple[int, int] | None = None  # libcamera's validate() changing the lores size
    focus_at = 3.0  # dioptres at which the fake's optics are sharp (only cameras with a focus motor)
    release = threading.Event()
    instances: ClassVar[list[FakePicamera2]] = []
    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx477", "Num": 0}]
    tuning_files: ClassVar[dict[str, dict[str, Any]]] = {}  # name -> tuning; models' own files added

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        # Picamera2.__init__: global_camera_info()[camera_num] (IndexError with no camera), then
        # _open_camera -> camera.acquire(), which libcamera's binding raises as RuntimeError
        # "Failed to acquire camera: Device or resource busy"; both come out wrapped in
        # RuntimeError("Camera __init__ sequence did not complete.").
        self.model = FakePicamera2.global_camera_info()[camera_num]["Model"]
        if FakePicamera2.busy:
            try:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            except RuntimeError as cause:
                raise RuntimeError("Camera __init__ sequence did not complete.") from cause
        self.tuning = tuning
        self.sensor = SENSORS[self.model]
        self.camera_controls = dict(self.sensor["controls"])
        self.configured: dict[str, Any] | None = None
        self.camera_config: dict[str, Any] = {}
        self.started = self.stopped = self.closed = False
        self.preview_running = False
        self.captures = 0
        self.lens_position: float | None = None
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return FakePicamera2.cameras

    @staticmethod
    def load_tuning_file(tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        # Picamera2.load_tuning_file: the JSON of the first folder holding it, else
        # RuntimeError("Tuning file not found").
        if dir is not None:
            path = Path(dir) / tuning_file
            if path.is_file():
                return json.loads(path.read_text())
            raise RuntimeError("Tuning file not found")
        known = {f"{model}.json": fake_tuning(model) for model in SENSORS} | FakePicamera2.tuning_files
        if tuning_file not in known:
            raise RuntimeError("Tuning file not found")
        return json.loads(json.dumps(known[tuning_file]))

    @staticmethod
    def find_tuning_algo(tuning: dict, name: str) -> dict:
        # Picamera2.find_tuning_algo: version 1 files are flat, later ones list the algorithms.
        if tuning.get("version", 1) == 1:
            return tuning[name]
        return next(algo for algo in tuning["algorithms"] if name in algo)[name]

    def create_video_configuration(
        self, main: dict, lores: dict, buffer_count: int, controls: dict, colour_space: Any = None, sensor: Any = None
    ) -> dict:
        # create_video_configuration: with colour_space None, Smpte170m below 1280x720, else Rec709.
        if colour_space is None:
            small = main["size"][0] < 1280 or main["size"][1] < 720
            colour_space = FakeColorSpace.Smpte170m() if small else FakeColorSpace.Rec709()
        return {
            "main": dict(main),
            "lores": dict(lores),
            "buffer_count": buffer_count,
            "controls": controls,
            "colour_space": colour_space,
            "sensor": sensor if sensor is not None else {},
        }

    def _choose_mode(self, configuration: dict) -> tuple[tuple[int, int], int, float]:
        # _make_libcamera_config: the requested sensor mode, else the one whose size and aspect
        # ratio best match the main stream (score_mode, as libcamera scores modes).
        wanted = configuration.get("sensor") or {}
        modes = self.sensor["modes"]
        if wanted.get("output_size"):
            for size, depth, fps in modes:
                if size == tuple(wanted["output_size"]) and depth == wanted.get("bit_depth", depth):
                    return size, depth, fps
        width, height = configuration["main"]["size"]

        def score(mode: tuple) -> float:
            (mode_w, mode_h), depth, _ = mode

            def score_format(desired: float, actual: float) -> float:
                difference = desired - actual
                return -difference / 4 if difference < 0 else difference * 2

            total = score_format(width, mode_w) + score_format(height, mode_h)
            total += 1500 * score_format(width / height, mode_w / mode_h)
            return total + 500 * abs(modes[-1][1] - depth)

        return min(modes, key=score)

    def configure(self, configuration: dict) -> None:
        # check_camera_config / check_stream_config: sizes must be even; the fake also refuses
        # any colour space but sYCC, so a source that forgets it cannot pass the tests.
        for name in ("main", "lores"):
            width, height = configuration[name]["size"]
            if width % 2 or height % 2:
                raise RuntimeError("width and height should be even")
        if configuration["colour_space"] != FakeColorSpace.Sycc():
            raise RuntimeError(f"fake camera: colour space {configuration['colour_space']} is not sYCC (full range)")
        # Controls(self, controls=...) in configure_: Controls.__setattr__ raises for a control
        # the camera does not advertise.
        for name in configuration["controls"]:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        size, depth, fps = self._choose_mode(configuration)
        lores_size = FakePicamera2.lores_adjust or tuple(configuration["lores"]["size"])
        # _update_camera_config writes the validated stream sizes, strides, colour space and
        # sensor config back; the controls' limits follow the new mode.
        self.camera_config = {
            **configuration,
            "lores": {**configuration["lores"], "size": lores_size, "stride": lores_size[0] + self.stride_padding},
            "sensor": {"bit_depth": depth, "output_size": size},
        }
        self.camera_controls["FrameDurationLimits"] = (round(1_000_000 / fps), 1_000_000_000, 33_333)
        self.configured = configuration
        self.lens_position = configuration["controls"].get("LensPosition")

    def set_controls(self, controls: dict) -> None:
        # set_controls -> Controls.set_controls: the same refusal of unadvertised controls.
        for name in controls:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        self.lens_position = controls.get("LensPosition", self.lens_position)

    def _through_the_lens(self, frame: np.ndarray) -> np.ndarray:
        """Not picamera2: the optics. Away from ``focus_at`` dioptres the frame blurs (a box of
        one pixel per dioptre), so a focus sweep has a sharpest position to find."""
        if self.lens_position is None:
            return frame
        radius = round(abs(self.lens_position - self.focus_at))
        blurred = frame.astype(np.float32)
        for axis in (0, 1):
            total = sum(np.roll(blurred, shift, axis=axis) for shift in range(-radius, radius + 1))
            blurred = total / (2 * radius + 1)
        return blurred.astype(np.uint8)

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def start(self) -> None:
        # start() with show_preview=False still starts the NULL preview: the event loop thread.
        self.started = True
        self.preview_running = True

    def _wait_for_a_frame(self) -> None:
        """A capture job with no frame coming: pending until cancel_all_and_flush() cancels it
        (Job.cancel: CancelledError) or the test releases it."""
        job: Future = Future()
        with self._lock:
            self._pending.append(job)
        while not job.done() and not FakePicamera2.release.is_set():
            time.sleep(0.01)
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
        if job.done():
            job.result()  # raises CancelledError
        raise RuntimeError("released")

    def pending_captures(self) -> int:
        with self._lock:
            return len(self._pending)

    def capture_metadata(self, wait: Any = None) -> dict[str, Any]:
        # dispatch_functions: with wait a number, job.get_result(timeout) raises TimeoutError.
        if self.behaviour == "hang":
            FakePicamera2.release.wait(wait if isinstance(wait, (int, float)) else None)
            raise TimeoutError()
        (mode_w, mode_h) = self.camera_config["sensor"]["output_size"]
        return {"ScalerCrop": (0, 0, mode_w * 2, mode_h * 2), "SensorTimestamp": 1}

    def capture_array(self, name: str) -> np.ndarray:
        assert name == "lores"
        self.captures += 1
        width, height = self.camera_config["lores"]["size"]
        if self.behaviour == "raise":
            raise RuntimeError("camera frontend timeout")
        if self.behaviour == "garbage":
            return np.zeros((7, 3), dtype=np.uint8)
        if self.behaviour == "hang":
            self._wait_for_a_frame()
        if self._frame is None:
            self._frame, _ = render_frame(np.random.default_rng(1), height, width, cells=6)
        buffer = np.full((height * 3 // 2, width + self.stride_padding), 128, dtype=np.uint8)
        buffer[:height, :width] = self._through_the_lens(self._frame)
        buffer[:height, width:] = 255  # stride padding: must never reach the frame
        return buffer

    def cancel_all_and_flush(self) -> None:
        # cancel_all_and_flush: every queued job is cancelled and the list emptied.
        with self._lock:
            for job in self._pending:
                job.set_exception(CancelledError())
            self._pending = []

    def stop(self) -> None:
        # stop(): with the event loop running, stop_ is dispatched behind the queued jobs and
        # waits for them (dispatch_functions(..., wait=True)): a pending capture blocks it.
        if self.preview_running:
            while self.pending_captures() and not FakePicamera2.release.is_set():
                time.sleep(0.01)
        self.stopped = True

    def close(self) -> None:
        # close(): stop_preview() first (the event loop ends), so stop() then runs stop_ directly.
        self.preview_running = False
        self.stop()
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
