"""Find the cells in a full frame: texture threshold, connected components, size filters, clusters.

Phase contrast shows a cell by its bright halo and textured body, not by a grey level that
differs from the background (the body sits near the background level). So the foreground is
where the local standard deviation stands clearly above the background's sensor noise, which
is estimated from the frame itself each time (the median local deviation: most of a frame is
background). Holes are filled, the few pixels the texture window added at the rim are taken
off again, and scipy.ndimage labels the objects.

An object is a **cluster** (several cells together) by one of two rules (``cluster_rule``):

- ``learnt`` (the default): a logistic regression on the object's size against a typical single
  cell's, its solidity, its deepest notch and the waist between its two thickest parts
  (edge/cells/cluster_features.py, edge/cells/cluster_rule.py), learnt from frames composed of
  real single-cell crops, flagging ``cluster_flag_rate`` of its training single cells; and any
  object larger than ``cluster_area_px`` when that is set.
- ``shape`` (the rule before it, kept for comparison): larger than ``cluster_area_px``, or
  clearly larger than the frame's typical object and either with more than one distance-transform
  core or markedly non-convex (area well below its convex hull's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from edge.cells.cluster_features import cluster_features
from edge.cells.cluster_rule import compact_pairs, shipped_rule
from edge.cells.detect_settings import FIXED_CLUSTER_AREA_PX, DetectSettings

__all__ = ["DetectSettings", "Detection", "Inspected", "detect", "inspect", "min_frame_side"]

NOISE_SAMPLE_STEP = 2  # the noise level is the median over every 2nd (working) pixel each way
CORE_CHECK_AREA_RATIO = 1.2  # objects this much larger than the frame's median object get the core test
MAX_CORES = 8  # enough to call it a cluster; counting further buys nothing
MIN_BINNED_SIDE = 3  # the texture window is 3x3 binned pixels: a narrower frame has no texture to measure


@dataclass(frozen=True)
class Detection:
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 in frame pixels (end exclusive)
    centroid_yx: tuple[float, float]
    area: int  # pixels in the mask
    mask: np.ndarray  # bool, bbox-local: mask[0, 0] is frame pixel (y0, x0)
    cluster: bool
    cores: int  # distinct cores found (1 for a single cell)

    @property
    def origin_yx(self) -> tuple[int, int]:
        return self.bbox[0], self.bbox[1]


def min_frame_side(settings: DetectSettings) -> int:
    """The fewest pixels a frame may have each way for detection to look at it at all."""
    return MIN_BINNED_SIDE * settings.downscale


def bin_pixels(gray: np.ndarray, factor: int) -> np.ndarray:
    """Mean of factor x factor blocks as float32 (rows/columns that do not fill a block are left out).

    Strided slices added as uint16 (exact up to factor 16): several times faster than a
    reshape-and-sum over a new axis.
    """
    if factor == 1:
        return gray.astype(np.float32)
    height, width = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    gray = gray[:height, :width]
    rows = gray[0::factor].astype(np.uint16)
    for offset in range(1, factor):
        rows += gray[offset::factor]
    blocks = rows[:, 0::factor].copy()
    for offset in range(1, factor):
        blocks += rows[:, offset::factor]
    return blocks.astype(np.float32) * np.float32(1.0 / (factor * factor))


def box_mean3(values: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3x3 neighbourhood (edges replicated), by shifted slices."""
    padded = np.pad(values, 1, mode="edge")
    rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    return (rows[:-2] + rows[1:-1] + rows[2:]) * np.float32(1.0 / 9.0)


def erode4(mask: np.ndarray) -> np.ndarray:
    """One step of erosion with the 4-neighbour cross; outside the frame counts as foreground."""
    padded = np.pad(mask, 1, constant_values=True)
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def foreground(pixels: np.ndarray, settings: DetectSettings) -> np.ndarray:
    """Boolean mask of textured (cell) pixels, holes filled, on (binned) float pixels."""
    mean = box_mean3(pixels)
    mean_sq = box_mean3(pixels * pixels)
    deviation = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    noise = float(np.median(deviation[::NOISE_SAMPLE_STEP, ::NOISE_SAMPLE_STEP]))
    mask = fill_holes(deviation > max(settings.noise_factor * noise, settings.min_contrast))
    # The 3x3 window spread each textured pixel by one pixel; take that rim back off.
    return erode4(mask)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every background region that does not reach the frame border (one labelling pass,
    much faster than ndimage.binary_fill_holes' iterative propagation on large frames)."""
    background, count = ndimage.label(~mask)
    if count == 0:
        return mask
    border = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(count + 1, dtype=bool)
    outside[border] = True
    outside[0] = False  # label 0 is the foreground itself
    return ~outside[background]


def count_cores(mask: np.ndarray, min_dip_px: float = 1.5) -> int:
    """Distinct maxima of the distance transform, separated by a real waist.

    Candidates are the local maxima, strongest first; the disc each accepted core inscribes
    swallows the candidates inside it, and a candidate outside every disc becomes a new core
    only when the distance dips between it and each core already found.
    """
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)  # np.pad costs 10x more
    padded[1:-1, 1:-1] = mask
    distance = ndimage.distance_transform_edt(padded)
    peak = float(distance.max())
    if peak < 2:  # a sliver: nothing to split
        return 1
    local_max = (distance == ndimage.maximum_filter(distance, size=3)) & (distance >= 0.4 * peak)
    ys, xs = np.nonzero(local_max)
    order = np.argsort(-distance[ys, xs], kind="stable")
    ys, xs = ys[order], xs[order]
    cores: list[tuple[int, int]] = []
    while ys.size and len(cores) < MAX_CORES:
        top = (int(ys[0]), int(xs[0]))
        if all(_separated(distance, top, core, min_dip_px) for core in cores):
            cores.append(top)
        radius = distance[top]
        outside = (ys - top[0]) ** 2 + (xs - top[1]) ** 2 > radius * radius
        ys, xs = ys[outside], xs[outside]
    return len(cores)


def solidity(mask: np.ndarray) -> float:
    """Mask area over its convex hull's area: near 1 for one round or elongated cell, lower where
    two cells meet at a waist. The hull is taken over the outer corners of each row's end pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size < 2:
        return 1.0
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    corners = np.concatenate(
        [
            np.column_stack([rows, first]),
            np.column_stack([rows + 1, first]),
            np.column_stack([rows, last + 1]),
            np.column_stack([rows + 1, last + 1]),
        ]
    ).astype(np.float64)
    try:
        hull_area = ConvexHull(corners).volume  # in 2-D, "volume" is the area
    except Exception:  # qhull refuses degenerate (collinear) point sets: a one-pixel-wide line is convex
        return 1.0
    return float(mask.sum() / hull_area) if hull_area > 0 else 1.0


def _separated(distance: np.ndarray, a: tuple[int, int], b: tuple[int, int], min_dip_px: float) -> bool:
    """True when the distance dips between a and b by a real waist, not by boundary noise."""
    steps = max(abs(a[0] - b[0]), abs(a[1] - b[1])) + 1
    ys = np.rint(np.linspace(a[0], b[0], steps)).astype(int)
    xs = np.rint(np.linspace(a[1], b[1], steps)).astype(int)
    lower_peak = min(distance[a], distance[b])
    dip = lower_peak - float(distance[ys, xs].min())
    return dip >= max(min_dip_px, 0.25 * lower_peak)


# Why an object is not a cell (`metascope detect` lists them; the service only drops them).
TOO_SMALL = "smaller than detect.min_area_px"
TOO_LARGE = "larger than detect.max_area_px"
AT_BORDER = "touches the frame edge (detect.skip_border)"
# Why a cell is a cluster.
LARGE = "larger than detect.cluster_area_px"
CORES = "several cores"
NOT_CONVEX = "solidity under detect.min_solidity"
LEARNT = "size and shape of several cells (learnt rule)"
COMPACT_PAIR = "two compact cells meeting at a waist"


@dataclass(frozen=True)
class Inspected:
    """One object found in a frame, kept or not, with the figures detection decided on."""

    detection: Detection  # what the service would get (rejected ones too, for drawing)
    solidity: float  # NaN where it was not measured (a rejected object too small to shape)
    rejected: str  # "" for a cell; else why detection drops it
    cluster_reasons: tuple[str, ...]  # empty for a single cell
    cluster_score: float = math.nan  # the learnt rule's log-odds of several cells (NaN: the shape rule)


def detect(gray: np.ndarray, settings: DetectSettings | None = None) -> list[Detection]:
    """Every cell object in a uint8 grayscale frame, in label order (top to bottom)."""
    return [item.detection for item in _objects(gray, settings or DetectSettings(), explain=False)]


def inspect(gray: np.ndarray, settings: DetectSettings | None = None) -> list[Inspected]:
    """Every object of the frame, the ones detection drops included, each with why (for tuning
    detection on a few frames: `metascope detect`). The kept ones are exactly ``detect``'s."""
    return _objects(gray, settings or DetectSettings(), explain=True)


def _objects(gray: np.ndarray, settings: DetectSettings, explain: bool) -> list[Inspected]:
    """The one detection: ``explain`` False (the service) makes only the kept objects and skips
    every figure a decision does not need."""
    factor = settings.downscale
    if min(gray.shape) < min_frame_side(settings):  # binning would leave (next to) nothing: no cell fits
        return []
    labels, count = ndimage.label(foreground(bin_pixels(gray, factor), settings))
    if count == 0:
        return []
    stats = _LabelStats.of(labels, count, factor)
    boxes = list(enumerate(ndimage.find_objects(labels), start=1))
    sized = [
        (label, box)
        for label, box in boxes
        if box is not None and settings.min_area_px <= stats.areas[label] <= settings.max_area_px
    ]
    # Only objects clearly larger than the typical one can be two cells: only they get the core test.
    typical = float(np.median([stats.areas[label] for label, _ in sized])) if len(sized) >= 3 else 0.0
    core_check_area = max(2 * settings.min_area_px, CORE_CHECK_AREA_RATIO * typical)
    found = []
    for label, box in boxes if explain else sized:
        if box is None:
            continue
        area = int(stats.areas[label])
        bbox = (box[0].start * factor, box[1].start * factor, box[0].stop * factor, box[1].stop * factor)
        rejected = _rejection(area, bbox, gray.shape, settings)
        if rejected and not explain:
            continue
        binned_mask = labels[box] == label
        score = math.nan
        if settings.cluster_rule == "learnt":
            cores, measured_solidity = 1, solidity(binned_mask) if explain else math.nan
            reasons, score = _learnt_reasons(binned_mask, area, settings)
        else:
            cores, measured_solidity = _shape(binned_mask, area >= core_check_area, factor, explain)
            reasons = _cluster_reasons(area, cores, measured_solidity, area >= core_check_area, settings)
        mask = binned_mask.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else binned_mask
        detection = Detection(
            bbox=bbox, centroid_yx=stats.centroid(label), area=area, mask=mask, cluster=bool(reasons), cores=cores
        )
        found.append(Inspected(detection, measured_solidity, rejected, reasons, score))
    return found


def reference_area(settings: DetectSettings) -> float:
    """A typical single cell's area in frame pixels: the settings', or the learnt rule's own."""
    return settings.reference_area_px or shipped_rule().reference_area_px


def _learnt_reasons(binned_mask: np.ndarray, area: int, settings: DetectSettings) -> tuple[tuple[str, ...], float]:
    """(why the object is a cluster, the learnt rule's score) by the learnt rule (and the size, if set)."""
    rule = shipped_rule()
    figures = cluster_features(binned_mask, area, reference_area(settings))
    score = float(rule.scores(figures)[0])
    return tuple(
        reason
        for reason, applies in (
            (LEARNT, score > rule.threshold(settings.cluster_flag_rate)),
            (COMPACT_PAIR, bool(compact_pairs(figures)[0])),
            (LARGE, bool(settings.cluster_area_px) and area > settings.cluster_area_px),
        )
        if applies
    ), score


@dataclass(frozen=True)
class _LabelStats:
    """Per-object sums over the binned grid; a binned pixel (y, x) stands for the factor x factor
    block whose centre is factor * y + (factor - 1) / 2 in frame pixels."""

    factor: int
    pixels: np.ndarray  # binned pixels per label (index 0: the background)
    areas: np.ndarray  # frame pixels per label
    sum_y: np.ndarray
    sum_x: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray, count: int, factor: int) -> _LabelStats:
        index = labels.ravel()
        binned_height, binned_width = labels.shape
        rows = np.repeat(np.arange(binned_height, dtype=np.float64), binned_width)
        columns = np.tile(np.arange(binned_width, dtype=np.float64), binned_height)
        pixels = np.bincount(index, minlength=count + 1)
        return cls(
            factor,
            pixels,
            pixels * factor * factor,
            np.bincount(index, weights=rows, minlength=count + 1),
            np.bincount(index, weights=columns, minlength=count + 1),
        )

    def centroid(self, label: int) -> tuple[float, float]:
        """The label's centroid (y, x) in frame pixels."""
        factor, pixels, centre_offset = self.factor, self.pixels[label], (self.factor - 1) / 2
        return factor * self.sum_y[label] / pixels + centre_offset, factor * self.sum_x[label] / pixels + centre_offset


def _rejection(
    area: int, bbox: tuple[int, int, int, int], frame_shape: tuple[int, ...], settings: DetectSettings
) -> str:
    """Why an object is not a cell ("" when it is one)."""
    rejected = TOO_SMALL if area < settings.min_area_px else TOO_LARGE if area > settings.max_area_px else ""
    y0, x0, y1, x1 = bbox
    height, width = frame_shape[:2]
    factor = settings.downscale
    if settings.skip_border and (y0 == 0 or x0 == 0 or y1 >= height - factor + 1 or x1 >= width - factor + 1):
        rejected = rejected or AT_BORDER
    return rejected


def _shape(binned_mask: np.ndarray, core_test: bool, factor: int, explain: bool) -> tuple[int, float]:
    """(cores, solidity) of an object: measured on the binned mask (4x fewer pixels, same shape) only
    where ``core_test`` asks for them, or for the table when ``explain``; solidity NaN otherwise."""
    cores, measured_solidity = 1, math.nan
    if core_test:
        cores = count_cores(binned_mask, min_dip_px=1.5 / factor)
        if cores == 1:
            measured_solidity = solidity(binned_mask)
    if explain and math.isnan(measured_solidity):
        measured_solidity = solidity(binned_mask)  # for the table; the decision did not need it
    return cores, measured_solidity


def _cluster_reasons(
    area: int, cores: int, measured_solidity: float, core_test: bool, settings: DetectSettings
) -> tuple[str, ...]:
    """Why an object is a cluster (empty for a single cell)."""
    return tuple(
        reason
        for reason, applies in (
            (LARGE, area > (settings.cluster_area_px or FIXED_CLUSTER_AREA_PX)),
            (CORES, cores > 1),
            (NOT_CONVEX, core_test and cores == 1 and measured_solidity < settings.min_solidity),
        )
        if applies
    )
