"""`metascope doctor --capture N [--focus]`: real frames from the camera, measured, so a user can
set exposure and focus over ssh without a screen: size, mean grey, clipped fraction, a sharpness
score, capture time alone (no classification), the sensor mode and colour space; with --focus,
the sharpness at a sweep of lens positions on a camera with a focus motor.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.capture.base import SourceError
from edge.capture.frame_figures import FrameFigures, frame_figures, sharpness
from edge.config import Config

CLIPPED_LIMIT = 0.01  # above 1 % of pixels at 0 or 255, exposure or gain is too high (or too low)
FOCUS_SETTLE_S = 0.5  # the lens motor's travel plus a few frames before a position is measured
FOCUS_FRAMES = 2  # frames averaged per lens position


@dataclass
class CaptureReport:
    lines: list[str]
    problems: list[str]  # each a sentence naming what to change
    live_problem: str = ""  # why --live could not serve (the frames were measured all the same)


class MeasuredFrames:
    """The last ``keep`` frames taken: their figures and how long each took to come."""

    def __init__(self, source, timeout_s: float, keep: int):
        self.source, self.timeout_s = source, timeout_s
        self.figures: deque[FrameFigures] = deque(maxlen=keep)
        self.waits_ms: deque[float] = deque(maxlen=keep)
        self.shape = (0, 0)

    def take(self, should_stop=None):
        started = time.perf_counter()
        frame = self.source.next_frame(self.timeout_s, should_stop)
        self.waits_ms.append((time.perf_counter() - started) * 1000.0)
        self.figures.append(frame_figures(frame.pixels))
        self.shape = frame.pixels.shape
        return frame


def capture_report(config: Config, frames: int, focus: bool, live: bool = False) -> CaptureReport:
    """Open the camera as the service would, take ``frames`` frames and measure them; with
    ``live``, serve every frame on the live view until stopped and measure the last ``frames``."""
    from edge.capture.picamera import Picamera2Source

    source = Picamera2Source(config.source.width, config.source.height, config.camera, config.source.timeout_s)
    source.open()
    try:
        measured = MeasuredFrames(source, config.source.timeout_s, frames)
        live_problem = ""
        if live:
            from edge.commands.camera_live import watch_live

            live_problem = watch_live(source, config, measured.take)
        while len(measured.figures) < frames:
            measured.take()
        height, width = measured.shape
        report = _summary(source.applied, width, height, list(measured.figures), list(measured.waits_ms))
        report.live_problem = live_problem
        if focus:
            report.lines.append(_focus_sweep(source, config.source.timeout_s))
        return report
    finally:
        source.close()


def _summary(
    applied: dict, width: int, height: int, figures: list[FrameFigures], waits_ms: list[float]
) -> CaptureReport:
    mode = applied.get("sensor_mode") or {}
    size = "x".join(str(v) for v in mode.get("output_size") or []) or "?"
    clipped = max(f.clipped for f in figures)
    lines = [
        f"{len(figures)} frames {width}x{height} from {applied.get('model')}, sensor mode {size} "
        f"{mode.get('bit_depth')}-bit, ScalerCrop {applied.get('scaler_crop')}, colour space "
        f"{applied.get('colour_space')}",
        f"mean grey {np.mean([f.mean_grey for f in figures]):.1f}, clipped {clipped * 100:.2f} % (worst frame), "
        f"sharpness {np.mean([f.sharpness for f in figures]):.1f}; capture {np.median(waits_ms):.1f} ms a frame "
        f"(median; max {max(waits_ms):.1f})",
    ]
    problems = []
    if clipped > CLIPPED_LIMIT:
        problems.append(
            f"{clipped * 100:.1f} % of pixels are clipped (0 or 255): lower camera.exposure_us or "
            "camera.analogue_gain if the frame is bright, raise them if it is dark"
        )
    return CaptureReport(lines, problems)


def _focus_sweep(source, timeout_s: float) -> str:
    """Sharpness at each whole dioptre the lens can reach, and the best one."""
    low, high = source.lens_range()
    if high <= low:
        return "focus: this camera has no focus motor (LensPosition not advertised): focus by hand"
    scores = []
    for position in np.arange(low, high + 1e-9, 1.0):
        source.set_lens_position(float(position))
        time.sleep(FOCUS_SETTLE_S)
        source.next_frame(timeout_s)  # a frame exposed while the lens moved
        values = [sharpness(source.next_frame(timeout_s).pixels) for _ in range(FOCUS_FRAMES)]
        scores.append((float(position), float(np.mean(values))))
    best = max(scores, key=lambda item: item[1])
    table = ", ".join(f"{position:g}: {score:.0f}" for position, score in scores)
    return f"focus sweep (dioptres: sharpness) {table}; sharpest at {best[0]:g}: set camera.lens_position = {best[0]:g}"


def capture_problem(exc: Exception) -> str:
    """A fix for a failed capture check."""
    if isinstance(exc, SourceError) and "busy" in str(exc):
        return "the service holds the camera: sudo systemctl stop metascope, run this, then start it again"
    return "see the message; `rpicam-hello --list-cameras` shows what libcamera sees"
