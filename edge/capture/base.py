"""What every frame source hands the service: a Frame, or one of these errors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class SourceError(Exception):
    """The source failed to deliver a frame (camera error, unreadable file). Counted; N in a row is fatal."""


class CaptureTimeout(SourceError):
    """No new frame arrived within the capture timeout: the camera has stalled."""


class BadFrame(SourceError):
    """A frame arrived but is unusable (wrong shape or dtype, undecodable file)."""


class EndOfSource(Exception):
    """A finite source (replay without loop) has no more frames."""


class NothingNew(Exception):
    """No frame yet and that is normal (a followed folder no one has added to): not a failure;
    the loop ticks (watchdog, status) and asks again."""


@dataclass
class Frame:
    """One grayscale frame. ``index`` is the source's own sequence number; ``dropped_before`` counts
    the frames the source produced since the previous one the service took (never queued)."""

    pixels: np.ndarray  # uint8, HxW
    captured_at: float  # seconds since the epoch (UTC)
    index: int
    dropped_before: int = 0
    truth: Any = field(default=None, repr=False)  # synthetic sources: the cells that were drawn


class FrameSource(Protocol):
    """Newest frame first: ``next_frame`` returns the most recent frame not yet returned.

    It raises CaptureTimeout after ``timeout_s`` without a new frame, BadFrame/SourceError for a
    failed capture, EndOfSource when a finite source is exhausted. It returns early (raising
    CaptureTimeout) when ``should_stop()`` becomes true, so a shutdown never waits a full timeout.
    """

    description: str

    def open(self) -> None: ...

    def next_frame(self, timeout_s: float, should_stop: Any = None) -> Frame: ...

    def close(self) -> None: ...


MIN_FRAME_SIDE = 8


def check_frame(pixels: object) -> np.ndarray:
    """The frame as a uint8 HxW array, or BadFrame naming what is wrong with it."""
    if not isinstance(pixels, np.ndarray):
        raise BadFrame(f"frame is a {type(pixels).__name__}, not an array")
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise BadFrame(f"frame is {pixels.dtype} with shape {list(pixels.shape)}, expected 2-D uint8")
    if min(pixels.shape) < MIN_FRAME_SIDE:
        raise BadFrame(f"frame shape {list(pixels.shape)} is too small to hold a cell")
    return pixels


STOP_CHECK_S = 0.05  # how often a paced wait looks at should_stop


class Pacer:
    """Frames at ``fps`` like a camera (0: as fast as they are taken): which frame is due, how
    many were missed, and a wait for the next one that a stop request cuts short."""

    def __init__(self, fps: float):
        self.fps = fps
        self.next_index = 0
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self.next_index = 0

    def take(self, should_stop: Any = None) -> tuple[int, int]:
        """(index of the frame to return, frames dropped since the last one). Raises
        CaptureTimeout when ``should_stop()`` turns true while waiting for the next frame."""
        dropped = 0
        if self.fps > 0:
            due = int((time.monotonic() - self._started) * self.fps)
            if due < self.next_index:  # the next frame is not exposed yet: wait for it
                ready_at = self._started + self.next_index / self.fps
                while (left := ready_at - time.monotonic()) > 0:
                    if should_stop is not None and should_stop():
                        raise CaptureTimeout("stopping while waiting for the next frame")
                    time.sleep(min(left, STOP_CHECK_S))
            else:
                dropped = due - self.next_index
                self.next_index = due
        index = self.next_index
        self.next_index += 1
        return index, dropped
