"""Frame sources: synthetic, replay, and picamera2 against a fake camera."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fake_site.registered_cameras import MONO
from fakes import FakeLibcamera, make_config
from PIL import Image

import edge.capture.picamera as picamera_module
from edge.capture import open_source, parse_source_arg
from edge.capture.base import BadFrame, CaptureTimeout, EndOfSource, SourceError
from edge.capture.camera_setup import CameraAbsent, CameraBusy, CameraSettingsRejected
from edge.capture.latest_frame import LatestFrameCapture
from edge.capture.picamera import Picamera2Source, camera_present, y_plane
from edge.capture.replay import ReplaySource
from edge.capture.still_field import StillFieldSource
from edge.capture.synthetic import SyntheticSource, render_frame
from edge.config import CameraConfig


def camera_source(width: int = 320, height: int = 240, **camera) -> Picamera2Source:
    settings = {"exposure_us": 5000, "analogue_gain": 2.0, "colour_gains": [1.5, 1.25], "frame_rate": 30.0}
    settings.update(camera)
    return Picamera2Source(width, height, CameraConfig(**settings), start_timeout_s=0.2)


# ------------------------------------------------------------------ synthetic
def test_synthetic_frames_are_deterministic_and_carry_truth() -> None:
    first, second = SyntheticSource(cells=10, seed=3, pool=2), SyntheticSource(cells=10, seed=3, pool=2)
    first.open()
    second.open()
    a, b = first.next_frame(1.0), second.next_frame(1.0)
    assert np.array_equal(a.pixels, b.pixels)
    assert a.pixels.shape == (480, 640) and a.pixels.dtype == np.uint8
    assert sum(len(obj.kinds) for obj in a.truth) == 10
    assert any(obj.cluster for obj in render_frame(np.random.default_rng(0), cells=40, cluster_fraction=0.5)[1])


def test_paced_synthetic_source_drops_frames_it_could_not_deliver() -> None:
    source = SyntheticSource(cells=2, fps=200.0, pool=1)
    source.open()
    source.next_frame(1.0)
    time.sleep(0.1)  # the loop was busy for ~20 frame periods
    frame = source.next_frame(1.0)
    assert frame.dropped_before >= 5
    assert frame.index >= 6


def test_a_still_field_keeps_its_cells_in_place_through_noise_and_jitter_until_the_stage_moves() -> None:
    from edge.cells.detect import detect

    source = StillFieldSource(cells=12, seed=5, move_every=3)
    source.open()
    frames = [source.next_frame(1.0) for _ in range(4)]
    assert not np.array_equal(frames[0].pixels, frames[1].pixels), "every frame has its own sensor noise"
    assert frames[0].truth is frames[2].truth and frames[3].truth is not frames[0].truth
    assert [source.field_of(frame.index) for frame in frames] == [0, 0, 0, 1]
    centres = [np.array([d.centroid_yx for d in detect(frame.pixels)]) for frame in frames]
    assert len(centres[0]) == len(centres[1]) >= 8
    # The same cells, less than a pixel or two away (sub-pixel jitter plus detection's binning)...
    assert np.abs(centres[1] - centres[0]).max() < 3.0
    # ...and after the stage moved, cells at other places.
    nearest = np.linalg.norm(centres[3][:, None, :] - centres[0][None, :, :], axis=2).min(axis=1)
    assert np.median(nearest) > 10.0


def test_a_dividing_cell_leaves_two_daughters_where_it_was() -> None:
    from edge.cells.detect import detect

    source = StillFieldSource(cells=10, seed=2, divide_every=3)
    source.open()
    frames = [source.next_frame(1.0) for _ in range(4)]
    before, after = frames[2].truth, frames[3].truth
    assert len(after) == len(before) + 1
    (mother,) = [item for item in before if item not in after]
    daughters = [item for item in after if item not in before]
    assert len(daughters) == 2 and not mother.cluster
    assert sum(d.mask.sum() for d in daughters) == pytest.approx(mother.mask.sum(), rel=0.35)
    for daughter in daughters:  # each beside the mother's centre, less than a mother's width away
        assert np.hypot(*np.subtract(daughter.centroid_yx, mother.centroid_yx)) < mother.mask.shape[0]
    assert len(detect(frames[3].pixels)) == len(detect(frames[2].pixels)) + 1


def test_max_frames_ends_a_source() -> None:
    source = SyntheticSource(cells=1, pool=1, max_frames=2)
    source.open()
    source.next_frame(1.0)
    source.next_frame(1.0)
    with pytest.raises(EndOfSource):
        source.next_frame(1.0)


# --------------------------------------------------------------------- replay
def write_frames(folder: Path, count: int) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for index in range(count):
        pixels = np.full((48, 64), 10 * (index + 1), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"frame_{index:02d}.png")
        frames.append(pixels)
    return frames


def test_replay_reads_a_folder_in_order_then_ends(tmp_path: Path) -> None:
    expected = write_frames(tmp_path / "frames", 3)
    source = ReplaySource(str(tmp_path / "frames"))
    source.open()
    for index, pixels in enumerate(expected):
        frame = source.next_frame(1.0)
        assert frame.index == index and np.array_equal(frame.pixels, pixels)
    with pytest.raises(EndOfSource):
        source.next_frame(1.0)


def test_replay_glob_loop_and_a_bad_file(tmp_path: Path) -> None:
    write_frames(tmp_path, 2)
    (tmp_path / "frame_01.png").write_bytes(b"not a png")
    source = ReplaySource(str(tmp_path / "*.png"), loop=True)
    source.open()
    first = source.next_frame(1.0)
    assert first.index == 0
    again = source.next_frame(1.0)  # the bad frame_01 is skipped: looped back to the first file
    assert np.array_equal(again.pixels, first.pixels) and source.skipped == 1


def test_replay_without_images_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no image files"):
        ReplaySource(str(tmp_path / "nothing")).open()


def test_source_argument_and_factory(tmp_path: Path) -> None:
    assert parse_source_arg("replay:/data/x") == {"kind": "replay", "replay_path": "/data/x"}
    assert parse_source_arg("synthetic") == {"kind": "synthetic"}
    assert parse_source_arg("still") == {"kind": "still"}
    for bad in ("replay:", "usb", "synthetic:3"):
        with pytest.raises(ValueError):
            parse_source_arg(bad)
    assert isinstance(open_source(make_config(tmp_path)), SyntheticSource)
    still = open_source(make_config(tmp_path, source={"kind": "still", "still_move_every": 50}))
    assert isinstance(still, StillFieldSource) and still.move_every == 50
    config = make_config(tmp_path, source={"kind": "picamera2"})
    assert isinstance(open_source(config), Picamera2Source)


# ------------------------------------------------------------------ picamera2
# Against tests/fakes.py's FakePicamera2, which mirrors picamera2 0.3.36 (each behaviour cites
# the function it copies); tests/hardware runs the same path on a real camera.
def opened(source: Picamera2Source) -> Picamera2Source:
    source.open()
    return source


def test_picamera2_locks_exposure_and_reads_the_lores_y_plane(fake_camera) -> None:
    source = opened(camera_source())
    try:
        frame = source.next_frame(2.0)
    finally:
        source.close()
    camera = fake_camera.instances[0]
    lores = camera.configured["lores"]
    assert lores == {"size": (320, 240), "format": "YUV420"}
    main_width, main_height = camera.configured["main"]["size"]
    assert main_width >= 320 and main_height >= 240
    controls = camera.configured["controls"]
    assert controls["AeEnable"] is False and controls["AwbEnable"] is False
    assert controls["ExposureTime"] == 5000 and controls["AnalogueGain"] == 2.0
    assert controls["ColourGains"] == (1.5, 1.25)
    assert controls["FrameDurationLimits"] == (33333, 33333)
    assert "AfMode" not in controls and "LensPosition" not in controls, "no lens_position: focus left alone"
    assert frame.pixels.shape == (240, 320) and frame.pixels.dtype == np.uint8
    assert frame.pixels.max() < 255, "stride padding (255) leaked into the frame"
    assert camera.started and camera.stopped and camera.closed


def test_the_camera_is_asked_for_full_range_bt601_the_grey_levels_of_training(fake_camera) -> None:
    """picamera2's video default is Rec709/Smpte170m, limited range (Y 16..235), which flips
    calls of the shipped model; sYCC is full-range BT.601, Pillow's "L" formula."""
    source = opened(camera_source())
    source.close()
    assert fake_camera.instances[0].configured["colour_space"] == FakeLibcamera.ColorSpace.Sycc()
    # str() of libcamera's ColorSpace is "<libcamera.ColorSpace 'sYCC'>": the record keeps the name
    assert source.applied["colour_space"] == "sYCC"
    # ...and the fake would have refused picamera2's default, so this cannot pass by accident.
    camera = fake_camera()
    default = camera.create_video_configuration(
        main={"size": (640, 480), "format": "YUV420"}, lores={"size": (320, 240), "format": "YUV420"},
        buffer_count=4, controls={},
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="not sYCC"):
        camera.configure(default)


def test_closing_a_stalled_camera_cancels_the_pending_capture_and_returns(fake_camera) -> None:
    fake_camera.behaviour = "hang"  # frames stop coming: a capture stays pending in picamera2
    source = opened(camera_source())
    with pytest.raises(CaptureTimeout):
        source.next_frame(0.2)
    camera = fake_camera.instances[0]
    capture_thread = source._capture._thread
    assert camera.pending_captures() == 1
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 1.0, "close waited for a frame that never comes"
    assert camera.closed and camera.pending_captures() == 0
    capture_thread.join(1.0)
    assert not capture_thread.is_alive(), "the capture thread was left blocked in picamera2"


@pytest.mark.parametrize(
    ("behaviour", "error", "message"),
    [
        ("raise", SourceError, "camera frontend timeout"),
        ("garbage", BadFrame, "does not hold"),
        ("hang", CaptureTimeout, "within 0.2 s"),
    ],
)
def test_picamera2_failures_surface_as_source_errors(fake_camera, behaviour, error, message) -> None:
    fake_camera.behaviour = behaviour
    source = opened(camera_source())
    try:
        with pytest.raises(error, match=message):
            source.next_frame(0.2)
    finally:
        source.close()


def test_y_plane_rejects_buffers_that_are_not_yuv420() -> None:
    with pytest.raises(BadFrame, match="does not hold a 64x48"):
        y_plane(np.zeros((48, 64), dtype=np.uint8), 48, 64)
    with pytest.raises(BadFrame, match="not a 2-D uint8"):
        y_plane(np.zeros((72, 64, 3), dtype=np.uint8), 48, 64)


def test_a_busy_and_an_absent_camera_get_different_messages(fake_camera) -> None:
    fake_camera.busy = True
    with pytest.raises(
        CameraBusy, match=r"camera busy: another program holds it .*rpicam-hello.*Device or resource busy"
    ):
        camera_source().open()
    fake_camera.busy = False
    fake_camera.cameras = []
    with pytest.raises(CameraAbsent, match="no camera found by libcamera: check the ribbon cable"):
        camera_source().open()
    assert not fake_camera.instances, "no camera object was left open"


@pytest.mark.parametrize("version", [(0, 3, 29), (0, 3, 36)])
def test_a_camera_busy_at_the_first_open_is_used_once_it_is_free(fake_camera, version) -> None:
    """Issue 17.1: Picamera2(tuning=...) leaves LIBCAMERA_RPI_TUNING_FILE naming the temporary
    file it deleted; a listing child that inherits it finds no camera, for ever."""
    fake_camera.version = version  # the busy error chained through __context__ (0.3.29) or __cause__
    fake_camera.busy = True  # someone focusing with rpicam-hello
    with pytest.raises(CameraBusy, match="Device or resource busy"):
        camera_source().open()
    fake_camera.busy = False
    source = opened(camera_source())
    try:
        assert source.next_frame(2.0).pixels.shape == (240, 320)
    finally:
        source.close()
    assert "LIBCAMERA_RPI_TUNING_FILE" not in os.environ, "left for every child process to inherit"
    assert camera_present() == (True, "imx477")


def test_a_failed_open_leaves_nothing_registered(fake_camera) -> None:
    """Issue 17.2: a Picamera2() that fails registers itself in picamera2's camera manager
    under the camera's number and is never removed: it takes the frames of the camera that is
    open under that number in the same process."""
    first = opened(camera_source())
    try:
        first.next_frame(2.0)
        with pytest.raises(CameraBusy, match="camera busy"):
            camera_source().open()  # the camera is held: by this process, here
        for _ in range(3):  # past any frame taken before the failed open
            assert first.next_frame(1.0).pixels.shape == (240, 320), "the failed open took the camera's frames"
    finally:
        first.close()
    # Held by another process: each failed try must leave no registration (the manager's
    # listener thread keeps running for it) and no file descriptor (its wake-up pipe).
    fake_camera.busy = True
    descriptors = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(CameraBusy):
            camera_source().open()
    assert fake_camera._cm.cameras == {} and not fake_camera._cm.running, "a failed open left itself registered"
    assert len(os.listdir("/proc/self/fd")) == descriptors, "each failed open leaked its pipe"


def test_no_picamera2_is_a_clear_error(monkeypatch) -> None:
    def missing():
        raise ImportError("No module named 'picamera2'")

    monkeypatch.setattr(picamera_module, "import_picamera2", missing)
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        camera_source().open()
    assert camera_present()[0] is False


def test_camera_present_lists_cameras(fake_camera) -> None:
    assert camera_present() == (True, "imx477")
    fake_camera.cameras = []
    assert camera_present()[0] is False


def test_a_mono_sensor_gets_no_colour_controls(fake_camera, caplog) -> None:
    # libcamera's Model is the sensor's name, "imx296", for the mono global shutter camera too
    fake_camera.cameras = [{"Model": "imx296", "ColorFilterArrangement": MONO}]
    source = opened(camera_source())
    source.close()
    controls = fake_camera.instances[0].configured["controls"]
    assert "ColourGains" not in controls and "AwbEnable" not in controls and controls["ExposureTime"] == 5000
    assert source.applied["controls_left_out"] == ["AwbEnable", "ColourGains"]
    assert "does not advertise AwbEnable, ColourGains" in caplog.text


def test_a_mono_sensor_gets_its_mono_tuning_as_libcamera_would_choose(fake_camera) -> None:
    """Issue 17.4: libcamera loads <model>_mono.json when the sensor's colour filter arrangement
    is MONO (pipeline_base.cpp, CameraData::loadIPA); Model says "imx296" either way."""
    fake_camera.cameras = [{"Model": "imx296", "ColorFilterArrangement": MONO}]
    source = opened(camera_source())
    source.close()
    assert source.applied["tuning"] == "imx296_mono.json, rpi.contrast ce_enable 0"
    assert fake_camera.instances[0].tuning["model"] == "imx296_mono", "the colour tuning (awb, ccm) on a mono sensor"
    fake_camera.cameras = [{"Model": "imx296"}]  # the colour global shutter camera
    source = opened(camera_source())
    source.close()
    assert source.applied["tuning"] == "imx296.json, rpi.contrast ce_enable 0"


def test_lens_position_is_sent_in_manual_focus_to_a_camera_with_a_focus_motor(fake_camera, caplog) -> None:
    fake_camera.cameras = [{"Model": "imx708", "Num": 0}]
    opened(camera_source(lens_position=2.5)).close()
    controls = fake_camera.instances[0].configured["controls"]
    assert controls["AfMode"] == 0 and controls["LensPosition"] == 2.5  # AfModeEnum.Manual
    with pytest.raises(CameraSettingsRejected, match=r"camera.lens_position: 20 dioptres is outside .* 0\.\.15"):
        camera_source(lens_position=20.0).open()
    fake_camera.cameras = [{"Model": "imx477", "Num": 0}]  # the HQ camera: manual lens, no motor
    opened(camera_source(lens_position=2.5)).close()
    assert "LensPosition" not in fake_camera.instances[-1].configured["controls"]
    assert "camera.lens_position 2.5 ignored: this camera has no focus control" in caplog.text


@pytest.mark.parametrize(("model", "mode"), [("imx708", [2304, 1296]), ("imx477", [2028, 1520])])
def test_the_sensor_mode_is_pinned_per_model_and_reported(fake_camera, model, mode) -> None:
    """Left to libcamera, imx708 at this size would get its cropped 1536x864 mode."""
    fake_camera.cameras = [{"Model": model, "Num": 0}]
    source = opened(camera_source())
    source.close()
    assert source.applied["sensor_mode"]["output_size"] == mode
    assert source.applied["scaler_crop"] == [0, 0, mode[0] * 2, mode[1] * 2]
    assert f"sensor mode {mode[0]}x{mode[1]}" in source.description and "ScalerCrop" in source.description


def test_adaptive_contrast_is_turned_off_in_the_tuning(fake_camera, tmp_path: Path) -> None:
    source = opened(camera_source())
    source.close()
    tuning = fake_camera.instances[0].tuning
    assert fake_camera.find_tuning_algo(tuning, "rpi.contrast")["ce_enable"] == 0
    assert source.applied["tuning"] == "imx477.json, rpi.contrast ce_enable 0"
    own = tmp_path / "scope.json"
    own.write_text('{"version": 2.0, "algorithms": [{"rpi.contrast": {"ce_enable": 1}}], "mine": true}')
    opened(camera_source(tuning_file=str(own))).close()
    tuning = fake_camera.instances[-1].tuning
    assert tuning["mine"] and tuning["algorithms"][0]["rpi.contrast"]["ce_enable"] == 0
    with pytest.raises(CameraSettingsRejected, match=r"camera\.tuning_file: cannot load 'nowhere\.json'"):
        camera_source(tuning_file="nowhere.json").open()


def test_a_lores_size_the_camera_adjusts_is_named(fake_camera) -> None:
    fake_camera.lores_adjust = (320, 232)
    with pytest.raises(CameraSettingsRejected, match=r"source\.width, source\.height: .* from 320x240 to 320x232"):
        camera_source().open()
    assert fake_camera.instances[0].closed


def test_a_frame_rate_the_sensor_mode_cannot_reach_is_named(fake_camera) -> None:
    with pytest.raises(CameraSettingsRejected, match=r"camera\.frame_rate: 60 fps is faster than this sensor mode"):
        camera_source(frame_rate=60.0, exposure_us=1000).open()


def test_capture_thread_keeps_only_the_newest_frame() -> None:
    counter = iter(range(10**6))

    def grab():
        time.sleep(0.002)
        return np.full((8, 8), next(counter) % 256, dtype=np.uint8)

    capture = LatestFrameCapture(grab).start()
    try:
        first = capture.next_frame(1.0)
        time.sleep(0.05)
        second = capture.next_frame(1.0)
    finally:
        capture.stop()
    assert second.index > first.index + 1
    assert second.dropped_before == second.index - first.index - 1


def test_waiting_for_a_frame_returns_early_when_asked_to_stop() -> None:
    blocked = threading.Event()
    capture = LatestFrameCapture(lambda: blocked.wait() or np.zeros((8, 8), np.uint8)).start()
    try:
        with pytest.raises(CaptureTimeout, match="stopping"):
            capture.next_frame(30.0, should_stop=lambda: True)
    finally:
        blocked.set()
        capture.stop()
