"""The figures the cluster rule reads from one detected object's mask, each free of scale but the
first, which is measured against a typical single cell (edge.cells.cluster_rule), so that a
wrong typical size moves only that one figure:

- ``log_area``: log of the object's area over the reference single-cell area.
- ``solidity``: area over the convex hull's; two cells meeting at a waist fall below one.
- ``defect``: the deepest notch of the outline (the deepest point of hull-minus-object), in
  units of the object's own radius (that of a disc of its area).
- ``waist``: 1 - (half-width of the narrowest neck between two thick parts) / (the thinner
  part's inscribed radius): near 1 where two round cells touch at a point, near 0 for one cell
  however it bends, since a curved or spread cell keeps its thickness along its length. Found by
  lowering a level through the distance transform until the object falls apart into two.
- ``second_core``: that thinner part's inscribed radius over the thickest part's (a thin arm of
  a cell is low, a second cell of similar size near 1).

Why not a distance-transform core count along a straight line (edge.cells.detect.count_cores):
a C-shaped or branched single cell has a straight line between its cores through the background,
so it counts several cores; the waist follows the object itself.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

FEATURES = ("log_area", "solidity", "defect", "waist", "second_core")
WAIST_LEVELS = 16  # levels tried between the thickest part and a 1-pixel neck
TOP_LEVEL = 0.95  # of the thickest part's radius: the first level looked at
CROSS = ndimage.generate_binary_structure(2, 1)


def hull_mask(mask: np.ndarray) -> np.ndarray:
    """The convex hull of the mask's pixel centres, filled, as a mask of the same shape: each row's
    span between the hull's edges (no per-pixel point test)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size < 2:
        return mask
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    if (first == last).all() and np.ptp(first) == 0:
        return mask  # a vertical line
    # The hull of a row's end pixels is the hull of all its pixels.
    points = np.concatenate([np.column_stack([rows, first]), np.column_stack([rows, last])]).astype(np.float64)
    try:
        vertices = points[ConvexHull(points).vertices]
    except QhullError:  # collinear points: a line is its own hull
        return mask
    start, end = vertices, np.roll(vertices, -1, axis=0)
    rows = np.arange(mask.shape[0], dtype=np.float64)[:, None]  # every row of the box
    low, high = np.minimum(start[:, 0], end[:, 0]), np.maximum(start[:, 0], end[:, 0])
    crosses = (rows >= low) & (rows <= high) & (high > low)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = start[:, 1] + (rows - start[:, 0]) * (end[:, 1] - start[:, 1]) / (end[:, 0] - start[:, 0])
    left = np.where(crosses, x_at, np.inf).min(axis=1)
    right = np.where(crosses, x_at, -np.inf).max(axis=1)
    columns = np.arange(mask.shape[1])[None, :]
    return ((columns >= np.ceil(left[:, None] - 1e-6)) & (columns <= np.floor(right[:, None] + 1e-6))) | mask


def distance_inside(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel outside the mask (the box's edge counts as outside)."""
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def waist_figures(distance: np.ndarray) -> tuple[float, float]:
    """(waist, second_core) from the object's distance transform (see the module's docstring).
    Each part's thickness is read at the distance transform's local maxima only (a part holds at
    least one): a few dozen values a level instead of every pixel of every part."""
    peak = float(distance.max())
    if peak < 2.0:  # a sliver: no two thick parts
        return 0.0, 0.0
    # 4-neighbour maxima, as ndimage.label connects: a part's highest pixel is always one of them.
    tops = (distance == ndimage.maximum_filter(distance, footprint=CROSS)) & (distance >= 1.0)
    top_values = distance[tops]
    top_rows, top_columns = np.nonzero(tops)
    waist, second_core = 0.0, 0.0
    for level in np.linspace(TOP_LEVEL * peak, 1.0, WAIST_LEVELS):
        labels, count = ndimage.label(distance >= level, structure=CROSS)  # its default, made once
        if count < 2:
            continue
        radii = np.zeros(count + 1)
        np.maximum.at(radii, labels[top_rows, top_columns], top_values)
        second = float(np.sort(radii[1:])[-2])
        if second > 0 and 1.0 - level / second > waist:
            waist, second_core = 1.0 - level / second, second / peak
    return waist, second_core


def cluster_features(mask: np.ndarray, area_px: float, reference_area_px: float) -> np.ndarray:
    """The FEATURES of one object from its (binned) mask; ``area_px`` and ``reference_area_px`` are
    in frame pixels."""
    radius = math.sqrt(mask.sum() / math.pi)  # in the mask's (binned) pixels
    hull = hull_mask(mask)
    solidity = float(mask.sum() / max(int(hull.sum()), 1))
    notch = hull & ~mask
    depth = float(distance_inside(hull)[notch].max()) if notch.any() else 0.0
    waist, second_core = waist_figures(distance_inside(mask))
    return np.array(
        [math.log(max(area_px, 1.0) / reference_area_px), solidity, depth / radius, waist, second_core],
        dtype=np.float64,
    )
