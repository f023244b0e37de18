"""Deterministic phase-contrast-like frames with known cells: for tests, benchmarks and the demo.

Cells come from edge.capture.synthetic_cells.render_cell (the same cells the tiny test model learns from) and
are pasted onto a flat background near the cells' own grey level, with a gentle illumination
gradient and sensor noise, the way phase contrast looks: a cell is told from the background by
its halo and texture, not by being darker or brighter. About a fifth of the cells are drawn
touching one or two others, as clusters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from edge.capture.base import EndOfSource, Frame, Pacer
from edge.capture.synthetic_cells import KINDS, render_cell

BACKGROUND_LEVEL = 110.0
NOISE_SIGMA = 2.5
GAP_PX = 6  # free margin around separate objects, so they are not touching by accident
MAX_COVERAGE = 0.15  # cells are shrunk when this fraction of the frame would not hold them
MEAN_CELL_AREA_PX = 1300.0  # render_cell at scale 1, both kinds averaged


@dataclass(frozen=True)
class TrueObject:
    """One object as drawn: a single cell, or a cluster of touching cells."""

    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)
    centroid_yx: tuple[float, float]
    kinds: tuple[str, ...]  # one per cell
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # bool, bbox-local

    @property
    def cluster(self) -> bool:
        return len(self.kinds) > 1


def cell_scale_for(cells: int, height: int, width: int) -> float:
    """Shrink cells so ``cells`` of them cover at most MAX_COVERAGE of the frame."""
    if cells <= 0:
        return 1.0
    return min(1.0, math.sqrt(MAX_COVERAGE * height * width / (cells * MEAN_CELL_AREA_PX)))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tilt = rng.uniform(-6, 6, 2)
    vignette = -8.0 * (((yy / height - 0.5) ** 2 + (xx / width - 0.5) ** 2) * 2)
    return BACKGROUND_LEVEL + tilt[0] * (yy / height - 0.5) + tilt[1] * (xx / width - 0.5) + vignette


def render_frame(
    rng: np.random.Generator,
    height: int = 480,
    width: int = 640,
    cells: int = 20,
    cluster_fraction: float = 0.2,
    scale: float | None = None,
) -> tuple[np.ndarray, list[TrueObject]]:
    """A uint8 frame holding about ``cells`` cells, and the objects drawn (singles and clusters).

    Fewer cells are drawn when the frame cannot fit them without touching.
    """
    canvas, objects = render_field(rng, height, width, cells, cluster_fraction, scale)
    return add_sensor_noise(rng, canvas), objects


def add_sensor_noise(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """A float field as the camera would deliver it: sensor noise added, rounded to uint8."""
    noisy = canvas + rng.normal(0.0, NOISE_SIGMA, canvas.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def render_field(
    rng: np.random.Generator,
    height: int = 480,
    width: int = 640,
    cells: int = 20,
    cluster_fraction: float = 0.2,
    scale: float | None = None,
) -> tuple[np.ndarray, list[TrueObject]]:
    """``render_frame`` before the sensor noise: the float32 field and the objects drawn."""
    scale = cell_scale_for(cells, height, width) if scale is None else scale
    canvas = _background(rng, height, width)
    occupied = np.zeros((height, width), dtype=bool)
    objects: list[TrueObject] = []
    drawn = 0
    attempts = 0
    while drawn < cells and attempts < cells * 30:
        attempts += 1
        remaining = cells - drawn
        group = 1
        if remaining >= 2 and rng.random() < cluster_fraction / 1.8:
            group = 3 if remaining >= 3 and rng.random() < 0.3 else 2
        placed = _place_group(rng, canvas, occupied, group, scale)
        if placed is not None:
            objects.append(placed)
            drawn += group
    return canvas, objects


def _place_group(
    rng: np.random.Generator, canvas: np.ndarray, occupied: np.ndarray, group: int, scale: float
) -> TrueObject | None:
    """Draw ``group`` touching cells at a free spot; None when the spot is taken."""
    height, width = canvas.shape
    cells = [(kind, *render_cell(rng, kind, scale)) for kind in rng.choice(KINDS, size=group)]
    # Offsets of each cell's centre from the first: each new cell touches (overlaps) one already placed.
    offsets = [(0.0, 0.0)]
    radius = [math.sqrt(mask.sum() / math.pi) for _, _, mask in cells]  # equivalent-disc radius
    for index in range(1, group):
        anchor_index = int(rng.integers(index))
        anchor = offsets[anchor_index]
        reach = 0.9 * (radius[anchor_index] + radius[index])  # overlapping a little: touching
        angle = rng.uniform(0, 2 * math.pi)
        offsets.append((anchor[0] + reach * math.sin(angle), anchor[1] + reach * math.cos(angle)))
    half = max(mask.shape[0] for _, _, mask in cells) // 2
    span_y = [o[0] for o in offsets]
    span_x = [o[1] for o in offsets]
    low_y, high_y = -min(span_y) + half + GAP_PX, height - max(span_y) - half - GAP_PX
    low_x, high_x = -min(span_x) + half + GAP_PX, width - max(span_x) - half - GAP_PX
    if low_y >= high_y or low_x >= high_x:
        return None
    origin = (rng.uniform(low_y, high_y), rng.uniform(low_x, high_x))
    placements = []
    for (kind, patch, mask), (dy, dx) in zip(cells, offsets, strict=True):
        top = round(origin[0] + dy) - mask.shape[0] // 2
        left = round(origin[1] + dx) - mask.shape[1] // 2
        placements.append((kind, patch, mask, top, left))
    # The group's union mask, in a local box that holds every cell.
    y0 = min(top for *_, top, _ in placements)
    x0 = min(left for *_, left in placements)
    y1 = max(top + mask.shape[0] for _, _, mask, top, _ in placements)
    x1 = max(left + mask.shape[1] for _, _, mask, _, left in placements)
    union = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for _, _, mask, top, left in placements:
        union[top - y0 : top - y0 + mask.shape[0], left - x0 : left - x0 + mask.shape[1]] |= mask
    if group > 1 and ndimage.label(union)[1] != 1:
        return None  # the cells did not end up touching: not the cluster asked for
    guard = occupied[max(y0 - GAP_PX, 0) : y1 + GAP_PX, max(x0 - GAP_PX, 0) : x1 + GAP_PX]
    if guard.any():
        return None
    for _, patch, mask, top, left in placements:
        region = canvas[top : top + mask.shape[0], left : left + mask.shape[1]]
        region[mask] = patch[mask]
    occupied[y0:y1, x0:x1] |= union
    ys, xs = np.nonzero(union)
    tight = union[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ys, xs = ys + y0, xs + x0
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return TrueObject(
        bbox=(int(y0), int(x0), int(y1), int(x1)),
        centroid_yx=(float(ys.mean()), float(xs.mean())),
        kinds=tuple(str(kind) for kind, *_ in placements),
        mask=tight,
    )


class SyntheticSource:
    """Synthetic frames on demand (``fps`` 0) or paced like a camera (frames due while the loop
    was busy are dropped and counted). ``pool`` distinct frames are rendered once and repeated,
    so long benchmarks measure the pipeline rather than the renderer."""

    def __init__(
        self,
        height: int = 480,
        width: int = 640,
        cells: int = 20,
        seed: int = 0,
        fps: float = 0.0,
        pool: int = 16,
        max_frames: int | None = None,
    ):
        self.height, self.width, self.cells, self.seed = height, width, cells, seed
        self.fps, self.pool_size, self.max_frames = fps, max(1, pool), max_frames
        self.description = f"synthetic {width}x{height}, {cells} cells/frame, seed {seed}"
        self._pool: list[tuple[np.ndarray, list[TrueObject]]] = []
        self._pacer = Pacer(fps)

    def open(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._pool = [render_frame(rng, self.height, self.width, self.cells) for _ in range(self.pool_size)]
        self._pacer.start()

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        if self.max_frames is not None and self._pacer.next_index >= self.max_frames:
            raise EndOfSource(f"{self.max_frames} synthetic frames done")
        index, dropped = self._pacer.take(should_stop)
        pixels, truth = self._pool[index % self.pool_size]
        return Frame(pixels=pixels, captured_at=time.time(), index=index, dropped_before=dropped, truth=truth)

    def close(self) -> None:
        self._pool = []
