"""Detection's settings and their defaults, apart from detect.py so that reading the config
(as `metascope status` and `export` do) needs neither numpy nor scipy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectSettings:
    min_area_px: int = 150  # smaller objects are debris or noise
    max_area_px: int = 60_000  # larger ones are not cells (a bubble, the edge of the well)
    cluster_area_px: int = 6_000  # larger objects are clusters whatever their shape
    noise_factor: float = 2.0  # foreground: local deviation above this many times the background's
    min_contrast: float = 1.5  # ... and above this many grey levels, for near-noiseless images
    min_solidity: float = 0.88  # a large object less convex than this (area / convex hull) is a cluster
    skip_border: bool = True  # cells cut by the frame edge are left out: their window is incomplete
    downscale: int = 2  # work on 2x2-binned pixels: 4x faster; masks are exact to 2 px
