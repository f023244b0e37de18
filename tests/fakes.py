"""Test doubles for the service: a fake picamera2 and helpers to build configs."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
from fake_site.registered_cameras import MONO, TUNING_ENV, global_camera_info, registered

from edge.capture.synthetic import render_frame
from edge.config import Config, config_from_dict


class FakeColorSpace:
    """libcamera.ColorSpace: compared by value; str() is the binding's
    "<libcamera.ColorSpace 'sYCC'>" (libcamera v0.5.2+rpt20250903 src/py/libcamera/
    py_color_space.cpp lines 38-39), not the bare toString()."""

    def __init__(self, name: str):
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeColorSpace) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return f"<libcamera.ColorSpace '{self.name}'>"

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
# camera_controls gives them. libcamera v0.5.2+rpt20250903 src/ipa/rpi/common/ipa_base.cpp:
# a mono sensor (ColorFilterArrangement MONO) gets no AwbEnable or ColourGains (IpaBase::init,
# lines 184-186), and only a camera with a focus motor gets AfMode and LensPosition, advertised
# as 0..32 until configure() (ipaAfControls, line 116) and then as the tuning's rpi.af "map"
# domain (IpaBase::configure, lines 271-281).
COMMON_CONTROLS = {
    "AeEnable": (False, True, True),
    "ExposureTime": (26, 112_015_443, 20_000),
    "AnalogueGain": (1.0, 16.0, 1.0),
    "FrameDurationLimits": (0, 1_000_000_000, 33_333),  # min replaced by the mode's at configure
    "ScalerCrop": ((0, 0, 64, 64), (0, 0, 4056, 3040), (0, 0, 4056, 3040)),
}
COLOUR_CONTROLS = {"AwbEnable": (False, True, True), "ColourGains": (0.0, 32.0, None)}
FOCUS_CONTROLS = {"AfMode": (0, 2, 0), "LensPosition": (0.0, 32.0, 1.0)}
SENSORS: dict[str, dict[str, Any]] = {
    "imx477": {
        "modes": [
            ((1332, 990), 10, 120.0),
            ((2028, 1080), 12, 50.0),
            ((2028, 1520), 12, 40.0),
            ((4056, 3040), 12, 10.0),
        ],
        "lens": False,
    },
    "imx708": {"modes": [((1536, 864), 10, 120.0), ((2304, 1296), 10, 56.0), ((4608, 2592), 10, 14.0)], "lens": True},
    # The global shutter camera, colour or mono: libcamera's Model is "imx296" for both (the
    # sensor entity's name); only ColorFilterArrangement tells them apart.
    "imx296": {"modes": [((1456, 1088), 10, 60.0)], "lens": False},
}
TUNING_FILES = ("imx477.json", "imx708.json", "imx296.json", "imx296_mono.json")  # libcamera's, as shipped


def fake_tuning(name: str) -> dict[str, Any]:
    """A version 2 tuning file as libcamera ships them (src/ipa/rpi/pisp/data/imx477.json):
    rpi.contrast with ce_enable 1; imx708's has rpi.af, whose "map" (dioptres to lens driver
    steps) spans 0..15 dioptres (src/ipa/rpi/pisp/data/imx708.json line 1189)."""
    algorithms: list[dict[str, Any]] = [
        {"rpi.black_level": {"black_level": 4096}},
        {"rpi.contrast": {"ce_enable": 1, "gamma_curve": [0, 0, 65535, 65535]}},
    ]
    if name.startswith("imx708"):
        algorithms.append({"rpi.af": {"ranges": {"normal": {"min": 0.0, "max": 12.0, "default": 1.0}},
                                      "map": [0.0, 445, 15.0, 925]}})  # fmt: skip
    return {"version": 2.0, "target": "pisp", "algorithms": algorithms, "model": name}


class FakeCameraManager:
    """picamera2's CameraManager, Picamera2._cm, one per process (picamera2 0.3.36 picamera2.py
    lines 77-143; 0.3.29 lines 77-144): a camera registers itself by number (add) and leaves
    (cleanup), and every completed request goes to whichever object is registered under its
    camera's number (handle_request: self.cameras[req.cookie]), so a later registration under
    the same number takes that camera's frames."""

    def __init__(self) -> None:
        self.cameras: dict[int, Any] = {}
        self.running = False  # the listener thread (setup/listen)
        self._lock = threading.Lock()

    def add(self, index: int, camera: Any) -> None:
        with self._lock:
            self.cameras[index] = camera
            self.running = True

    def cleanup(self, index: int) -> None:
        with self._lock:
            del self.cameras[index]
            if self.cameras == {}:
                self.running = False

    def delivers_to(self, camera: Any) -> bool:
        return self.cameras.get(camera.camera_idx) is camera


class FakePicamera2:
    """The picamera2 calls edge.capture.picamera makes, behaving as picamera2 0.3.29 to 0.3.36 do
    where that changes what the caller sees (each behaviour cites raspberrypi/picamera2
    picamera2/picamera2.py at v0.3.36, or libcamera's source, for what it copies).

    ``behaviour`` (class attribute, set per test): "ok" returns YUV420 lores buffers whose rows
    are padded past the width (as real strides are); "raise" raises in capture_array; "garbage"
    returns a wrongly shaped buffer; "hang" leaves every capture pending (no frame comes) until
    it is cancelled or ``release`` is set. ``busy`` makes opening fail as when another process
    holds the camera; ``cameras`` is what libcamera finds (their properties: Model, and
    ColorFilterArrangement 5 for a mono sensor); ``version`` (0, 3, 29) or (0, 3, 36) picks how
    the failure of __init__ is chained.
    """

    behaviour = "ok"
    busy = False
    version = (0, 3, 36)
    stride_padding = 64
    lores_adjust: tuple[int, int] | None = None  # libcamera's validate() changing the lores size
    focus_at = 3.0  # dioptres at which the fake's optics are sharp (only cameras with a focus motor)
    release = threading.Event()
    instances: ClassVar[list[FakePicamera2]] = []
    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx477", "Num": 0}]
    tuning_files: ClassVar[dict[str, dict[str, Any]]] = {}  # name -> tuning; libcamera's own added
    _cm = FakeCameraManager()

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        # __init__, lines 326-337: a dict is written to a NamedTemporaryFile that
        # LIBCAMERA_RPI_TUNING_FILE points at; nothing ever clears the variable (only a later
        # Picamera2() without tuning pops it), and the file is deleted when __init__ ends (the
        # finally at line 371), whether it succeeded or not.
        tuning_file = None
        if tuning is not None:
            if isinstance(tuning, str):
                os.environ[TUNING_ENV] = tuning
            else:
                tuning_file = tempfile.NamedTemporaryFile("w")  # noqa: SIM115 (copied as picamera2 does it)
                json.dump(tuning, tuning_file)
                tuning_file.flush()
                os.environ[TUNING_ENV] = tuning_file.name
        else:
            os.environ.pop(TUNING_ENV, None)
        # Line 338: the pipe the manager's listener wakes this camera through; only close() of an
        # open camera closes it (lines 730-731).
        self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
        self.notifymeread = os.fdopen(self.notifyme_r, "rb")
        self.is_open = False
        # Lines 344-345, before the try: global_camera_info()[camera_num] (IndexError, unwrapped,
        # with no camera), then the object registers itself in _cm *before* opening the camera.
        camera_num = self.global_camera_info()[camera_num]["Num"]
        FakePicamera2._cm.add(camera_num, self)
        self.camera_idx = camera_num
        try:
            self._open_camera(tuning)
        except Exception as error:
            # Line 368 (0.3.36): "raise ... from e", the acquire error in __cause__; 0.3.29
            # (line 354) raises without "from", so it is only in __context__.
            if FakePicamera2.version >= (0, 3, 36):
                raise RuntimeError("Camera __init__ sequence did not complete.") from error
            raise RuntimeError("Camera __init__ sequence did not complete.")  # noqa: B904
        finally:
            if tuning_file is not None:
                tuning_file.close()  # deletes the temporary file
        FakePicamera2.instances.append(self)

    def _open_camera(self, tuning: Any) -> None:
        # _open_camera -> camera.acquire() (line 574): libcamera's Camera::acquire fails with EBUSY
        # while another process or another Picamera2 in this one holds the camera (src/libcamera/
        # camera.cpp), which the binding raises as RuntimeError "Failed to acquire camera: Device
        # or resource busy" (src/py/libcamera/py_main.cpp lines 154-158: std::system_error).
        held_here = any(other.is_open and other.camera_idx == self.camera_idx for other in FakePicamera2.instances)
        if FakePicamera2.busy or held_here:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        properties = registered(FakePicamera2.cameras, os.environ)[self.camera_idx]
        self.model = properties["Model"]
        self.mono = properties["ColorFilterArrangement"] == MONO
        self.sensor = SENSORS[self.model]
        # What libcamera's IPA loaded when the manager registered the camera: the file the
        # variable names, else <model>.json, or <model>_mono.json for a mono sensor (libcamera
        # src/libcamera/pipeline/rpi/common/pipeline_base.cpp, CameraData::loadIPA lines 1151-1154).
        path = os.environ.get(TUNING_ENV, "")
        default_name = self.model + ("_mono" if self.mono else "") + ".json"
        self.tuning = json.loads(Path(path).read_text()) if path else self.load_tuning_file(default_name)
        self.tuning_name = Path(path).name if path else default_name
        if tuning is not None and not isinstance(tuning, str):
            self.tuning = tuning  # the caller's dict itself, for the tests to look at
        self.camera_controls = dict(COMMON_CONTROLS)
        if not self.mono:
            self.camera_controls |= COLOUR_CONTROLS
        if self.sensor["lens"]:
            self.camera_controls |= FOCUS_CONTROLS
        self.configured: dict[str, Any] | None = None
        self.camera_config: dict[str, Any] = {}
        self.started = self.stopped = self.closed = False
        self.preview_running = False
        self.captures = 0
        self.lens_position: float | None = None
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self.is_open = True

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        # In this process the manager starts inside __init__, just after the variable is set.
        return global_camera_info(registered(FakePicamera2.cameras, os.environ))

    @staticmethod
    def load_tuning_file(tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        # Picamera2.load_tuning_file: the JSON of the first folder holding it, else
        # RuntimeError("Tuning file not found").
        if dir is not None:
            path = Path(dir) / tuning_file
            if path.is_file():
                return json.loads(path.read_text())
            raise RuntimeError("Tuning file not found")
        known = {name: fake_tuning(name.removesuffix(".json")) for name in TUNING_FILES} | FakePicamera2.tuning_files
        if tuning_file not in known:
            raise RuntimeError("Tuning file not found")
        return json.loads(json.dumps(known[tuning_file]))

    @staticmethod
    def find_tuning_algo(tuning: dict, name: str) -> dict:
        # Picamera2.find_tuning_algo: version 1 files are flat, later ones list the algorithms.
        if tuning.get("version", 1) == 1:
            return tuning[name]
        return next(algo for algo in tuning["algorithms"] if name in algo)[name]

    @staticmethod
    def _align(stream: dict) -> dict:
        # align_stream(stream, optimal=False) (line 1087-1099), which create_video_configuration
        # applies to main and lores (lines 904-907): width and height rounded down to even.
        width, height = stream["size"]
        return {**stream, "size": (width - width % 2, height - height % 2)}

    def create_video_configuration(
        self, main: dict, lores: dict, buffer_count: int, controls: dict, colour_space: Any = None, sensor: Any = None
    ) -> dict:
        # create_video_configuration: with colour_space None, Smpte170m below 1280x720, else Rec709.
        main, lores = self._align(main), self._align(lores)
        if colour_space is None:
            small = main["size"][0] < 1280 or main["size"][1] < 720
            colour_space = FakeColorSpace.Smpte170m() if small else FakeColorSpace.Rec709()
        return {
            "main": main,
            "lores": lores,
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
        # configure_ re-reads the controls after configuring (line 1225-1228): LensPosition's
        # limits become the tuning's rpi.af map domain (ipa_base.cpp, IpaBase::configure).
        focus_map = self._focus_map()
        if "LensPosition" in self.camera_controls and focus_map is not None:
            self.camera_controls["LensPosition"] = (float(focus_map[0]), float(focus_map[-2]), 1.0)
        self.configured = configuration
        self._move_lens(configuration["controls"].get("LensPosition"))

    def _focus_map(self) -> list[float] | None:
        try:
            return self.find_tuning_algo(self.tuning, "rpi.af")["map"]
        except (KeyError, StopIteration):
            return None

    def _move_lens(self, dioptres: float | None) -> None:
        """libcamera src/ipa/rpi/controller/rpi/af.cpp, Af::setLensPosition: the lens goes to the
        requested position clamped to the map's domain, silently (cfg_.map.domain().clamp)."""
        if dioptres is None:
            return
        focus_map = self._focus_map()
        if focus_map is not None:
            dioptres = min(max(dioptres, focus_map[0]), focus_map[-2])
        self.lens_position = dioptres

    def set_controls(self, controls: dict) -> None:
        # set_controls -> Controls.set_controls: the same refusal of unadvertised controls.
        for name in controls:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        self._move_lens(controls.get("LensPosition"))

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
        (Job.cancel: CancelledError), the test releases it, or frames reach this camera again
        (its number registered back to it in _cm: the job stays in _job_list and the next
        completed request runs it, process_requests, picamera2.py 0.3.36 lines 1411-1462), when
        it returns so that the capture goes on."""
        job: Future = Future()
        with self._lock:
            self._pending.append(job)
        while not job.done() and not FakePicamera2.release.is_set() and not self._frames_come():
            time.sleep(0.01)
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
        if job.done():
            job.result()  # raises CancelledError
        if not self._frames_come():
            raise RuntimeError("released")

    def pending_captures(self) -> int:
        with self._lock:
            return len(self._pending)

    def _frames_come(self) -> bool:
        """No frame reaches a camera whose number another object took in _cm (handle_request)."""
        return self.behaviour != "hang" and FakePicamera2._cm.delivers_to(self)

    def capture_metadata(self, wait: Any = None) -> dict[str, Any]:
        # dispatch_functions: with wait a number, job.get_result(timeout) raises TimeoutError.
        if not self._frames_come():
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
        if not self._frames_come():
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
        # close() (lines 704-718): stop_preview() first (the event loop ends), so stop() then runs
        # stop_ directly; an object whose camera never opened returns before _cm.cleanup, so it
        # stays registered; cleanup deletes whatever is registered under its number.
        self.preview_running = False
        if not self.is_open:
            return
        self.stop()
        FakePicamera2._cm.cleanup(self.camera_idx)
        self.is_open = False
        self.notifymeread.close()
        os.close(self.notifyme_w)
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
