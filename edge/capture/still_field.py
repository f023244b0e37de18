"""A still microscope field: the same cells frame after frame, as a time-lapse or a stage that
has stopped at a field shows them. For tests, the demo and `bench` of tracking.

Each field is drawn once (edge.capture.synthetic.render_field: the same synthetic cells and
background as SyntheticSource); every frame then shifts it by a sub-pixel jitter (vibration,
focus drift) and adds fresh sensor noise, so no two frames are equal but every cell stays
where it was. ``move_every`` > 0 moves the stage: every that many frames a new field (new
cells at new places) replaces the old one. ``divide_every`` > 0 lets a cell divide: every that
many frames of a field, one single cell is replaced by two smaller round daughters side by side
(together about its area), as a mitosis leaves them.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import ndimage

from edge.capture.base import EndOfSource, Frame, Pacer
from edge.capture.synthetic import TrueObject, add_sensor_noise, render_field
from edge.capture.synthetic_cells import render_cell

JITTER_PX = 0.3  # standard deviation of the whole field's shift per frame, in pixels
ROUND_SEMI_MAJOR_PX = 21.0  # render_cell's mean for a round cell at scale 1
DAUGHTER_GAP_PX = 12.0  # daughters apart: detection sees two objects (closer, its texture window joins them)


def divide(field: np.ndarray, mother: TrueObject, rng: np.random.Generator) -> list[TrueObject] | None:
    """Replace ``mother`` (a single cell of the noise-free ``field``, changed in place) by two round
    daughters of half its area each, side by side along a random axis. None when they would not
    fit inside the frame (nothing is changed then)."""
    if mother.mask is None or mother.cluster:
        return None
    radius = math.sqrt(mother.mask.sum() / math.pi / 2.0)  # each daughter's equivalent radius
    daughters = [render_cell(rng, "round", radius / ROUND_SEMI_MAJOR_PX) for _ in range(2)]
    angle = rng.uniform(0.0, math.pi)
    axis = np.array([math.sin(angle), math.cos(angle)])
    centre = np.array(mother.centroid_yx)
    placed = []
    for sign, (patch, mask) in zip((1.0, -1.0), daughters, strict=True):
        ys, xs = np.nonzero(mask)
        reach = float(np.hypot(ys - mask.shape[0] // 2, xs - mask.shape[1] // 2).max())  # its farthest pixel
        cy, cx = centre + sign * axis * (reach + DAUGHTER_GAP_PX / 2)
        top, left = round(cy) - mask.shape[0] // 2, round(cx) - mask.shape[1] // 2
        if top < 0 or left < 0 or top + mask.shape[0] > field.shape[0] or left + mask.shape[1] > field.shape[1]:
            return None
        placed.append((patch, mask, top, left))
    y0, x0, y1, x1 = mother.bbox
    # The field holds no noise yet and other cells keep a margin: the rim around the mother is
    # plain background, smooth enough that its median fills the mother's place.
    rim = field[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2]
    background = float(np.median(np.concatenate([rim[0], rim[-1], rim[:, 0], rim[:, -1]])))
    field[y0:y1, x0:x1][mother.mask] = background
    objects = []
    for patch, mask, top, left in placed:
        field[top : top + mask.shape[0], left : left + mask.shape[1]][mask] = patch[mask]
        ys, xs = np.nonzero(mask)
        tight = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        ys, xs = ys + top, xs + left
        objects.append(TrueObject((int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1),
                                  (float(ys.mean()), float(xs.mean())), ("round",), tight))  # fmt: skip
    return objects


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
        divide_every: int = 0,
        jitter_px: float = JITTER_PX,
        max_frames: int | None = None,
    ):
        if move_every < 0 or divide_every < 0:
            raise ValueError(f"move_every and divide_every must be 0 (never) or more frames, got {move_every}, "
                             f"{divide_every}")  # fmt: skip
        self.height, self.width, self.cells, self.seed = height, width, cells, seed
        self.fps, self.move_every, self.jitter_px, self.max_frames = fps, move_every, jitter_px, max_frames
        self.divide_every = divide_every
        moves = f", stage moves every {move_every} frames" if move_every else ""
        divisions = f", a cell divides every {divide_every} frames" if divide_every else ""
        self.description = f"still field {width}x{height}, {cells} cells, seed {seed}{moves}{divisions}"
        self._divisions = 0  # in the present field
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
            self._divisions = 0
        if self.divide_every:
            into_field = index - (self._field_number * self.move_every if self.move_every else 0)
            while self._divisions < into_field // self.divide_every:
                self._divisions += 1
                self._divide_one()
        shift = self._rng.normal(0.0, self.jitter_px, 2) if self.jitter_px > 0 else (0.0, 0.0)
        moved = ndimage.shift(self._field, shift, order=1, mode="nearest")
        return Frame(
            pixels=add_sensor_noise(self._rng, moved),
            captured_at=time.time(),
            index=index,
            dropped_before=dropped,
            truth=self._truth,
        )

    def _divide_one(self) -> None:
        """One single cell of the field divides (a new truth list: earlier frames keep theirs)."""
        singles = [index for index, item in enumerate(self._truth) if not item.cluster and item.mask is not None]
        for choice in self._rng.permutation(singles):
            daughters = divide(self._field, self._truth[choice], self._rng)
            if daughters is not None:
                self._truth = [*self._truth[:choice], *daughters, *self._truth[choice + 1 :]]
                return

    def close(self) -> None:
        self._field = None
