"""The figures the cluster rule reads from one detected object: its size against a typical single
cell's, and its shape and inner structure, each scale-free.

- ``log_area``: log of the object's area over the reference single-cell area (the model card's
  training cells' median, or the rule's own: edge.cells.clusters).
- ``solidity``: area over the convex hull's; two cells meeting at a waist fall below one.
- ``defect``: the deepest notch of the outline (deepest point of hull-minus-object), in units of
  the reference cell's radius: where two cells meet it is deep, for a ragged single cell shallow.
- ``cores``: distance-transform cores with a real waist between them (edge.cells.detect.count_cores).
- ``elongation``: the long axis over the short one (second moments).
- ``dark_cores``: dark blobs (nuclei, the thick centres phase contrast shows darker) in the
  smoothed grey levels inside the object, each a local minimum over a reference cell's radius.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay, QhullError

FEATURES = ("log_area", "solidity", "defect", "cores", "elongation", "dark_cores")
MAX_COUNT = 4  # counts beyond this say nothing more


def hull_mask(mask: np.ndarray) -> np.ndarray:
    """The object's convex hull as a mask of the same shape (the mask itself when qhull refuses)."""
    ys, xs = np.nonzero(mask)
    if ys.size < 3:
        return mask
    points = np.column_stack([ys, xs]).astype(np.float64)
    try:
        hull = ConvexHull(points)
        inside = Delaunay(points[hull.vertices])
    except QhullError:  # collinear points: a line is its own hull
        return mask
    grid = np.indices(mask.shape).reshape(2, -1).T
    return (inside.find_simplex(grid) >= 0).reshape(mask.shape) | mask


def shape_figures(mask: np.ndarray, reference_radius: float) -> tuple[float, float, float]:
    """(solidity, deepest notch over the reference radius, elongation) of a bool mask."""
    hull = hull_mask(mask)
    solidity = float(mask.sum() / max(hull.sum(), 1))
    notch = hull & ~mask
    depth = 0.0
    if notch.any():
        padded = np.pad(hull, 1)
        depth = float(ndimage.distance_transform_edt(padded)[1:-1, 1:-1][notch].max())
    ys, xs = np.nonzero(mask)
    if ys.size < 3:
        return solidity, depth / reference_radius, 1.0
    covariance = np.cov(np.vstack([ys, xs]).astype(np.float64))
    low, high = np.linalg.eigvalsh(covariance)
    elongation = math.sqrt(high / max(low, 1e-6))
    return solidity, depth / reference_radius, min(elongation, 10.0)


def dark_cores(pixels: np.ndarray, mask: np.ndarray, reference_radius: float) -> int:
    """Dark blobs of about a nucleus' size inside the object: local minima of the grey levels
    smoothed over a third of the reference radius, a reference radius apart, darker than the
    object's median by more than the smoothed grey levels' spread inside it."""
    sigma = max(reference_radius / 3.0, 1.0)
    smooth = ndimage.gaussian_filter(pixels.astype(np.float32), sigma)
    inner = ndimage.binary_erosion(mask, iterations=max(1, round(reference_radius / 4.0)))
    if not inner.any():
        return 0
    size = max(3, 2 * round(reference_radius) + 1)
    minima = (smooth == ndimage.minimum_filter(smooth, size=size)) & inner
    values = smooth[inner]
    dark = minima & (smooth < np.median(values) - values.std())
    return min(int(ndimage.label(dark)[1]), MAX_COUNT)


def cluster_features(
    mask: np.ndarray, pixels: np.ndarray, cores: int, area_px: float, reference_area_px: float, factor: int
) -> np.ndarray:
    """The FEATURES of one object from its (binned) mask and grey levels over the mask's box;
    ``area_px`` and ``reference_area_px`` are frame pixels, ``factor`` the binning."""
    radius = math.sqrt(reference_area_px / math.pi) / factor
    solidity, defect, elongation = shape_figures(mask, radius)
    return np.array(
        [
            math.log(max(area_px, 1.0) / reference_area_px),
            solidity,
            defect,
            min(cores, MAX_COUNT),
            elongation,
            dark_cores(pixels, mask, radius),
        ],
        dtype=np.float64,
    )
