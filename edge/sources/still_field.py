"""A still microscope field: the same cells frame after frame, as a time-lapse or a stage that
has stopped at a field shows them. For tests, the demo and `bench` of tracking.

Each field is drawn once (edge.sources.synthetic.render_field: the same synthetic cells and
background as SyntheticSource); every frame then shifts it by a sub-pixel jitter (vibration,
focus drift) and adds fresh sensor noise, so no two frames are equal but every cell stays
where it was. ``move_every`` > 0 moves the stage: every that many frames a new field (new
cells at new places) replaces the old one.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from edge.sources.base import EndOfSource, Frame, Pacer
from edge.sources.synthetic import TrueObject, add_sensor_noise, render_field

JITTER_PX = 0.3  # standard deviation of the whole field's shift per frame, in pixels


class StillFieldSource:
    """Frames of a still field (``move_every`` 0) or of a stage that moves every ``move_every``
    frames; paced like a camera when ``fps`` > 0 (frames due while the loop was busy are
    dropped and counted). A frame's ``truth`` is the objects of its field; ``field_of(index)``
    says which field (0, 1, ...) a frame shows."""

    def __init__(
        self,
        height: int = 480,
        width: int = 640,
        cells: int = 20,
        seed: int = 0,
        fps: float = 0.0,
        move_every: int = 0,
        jitter_px: float = JITTER_PX,
        max_frames: int | None = None,
    ):
        if move_every < 0:
            raise ValueError(f"move_every must be 0 (a still field) or more frames, got {move_every}")
        self.height, self.width, self.cells, self.seed = height, width, cells, seed
        self.fps, self.move_every, self.jitter_px, self.max_frames = fps, move_every, jitter_px, max_frames
        moves = f", stage moves every {move_every} frames" if move_every else ""
        self.description = f"still field {width}x{height}, {cells} cells, seed {seed}{moves}"
        self._rng = np.random.default_rng(seed)
        self._pacer = Pacer(fps)
        self._field_number = -1
        self._field: np.ndarray | None = None
        self._truth: list[TrueObject] = []

    def open(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._field_number = -1
        self._pacer.start()

    def field_of(self, index: int) -> int:
        """Which field frame ``index`` shows."""
        return index // self.move_every if self.move_every else 0

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        if self.max_frames is not None and self._pacer.next_index >= self.max_frames:
            raise EndOfSource(f"{self.max_frames} still-field frames done")
        index, dropped = self._pacer.take(should_stop)
        while self._field_number < self.field_of(index):  # fields skipped by dropped frames are drawn too
            self._field, self._truth = render_field(self._rng, self.height, self.width, self.cells)
            self._field_number += 1
        shift = self._rng.normal(0.0, self.jitter_px, 2) if self.jitter_px > 0 else (0.0, 0.0)
        moved = ndimage.shift(self._field, shift, order=1, mode="nearest")
        return Frame(
            pixels=add_sensor_noise(self._rng, moved),
            captured_at=time.time(),
            index=index,
            dropped_before=dropped,
            truth=self._truth,
        )

    def close(self) -> None:
        self._field = None
