"""Detection's settings and their defaults, apart from detect.py so that reading the config
(as `metascope status` and `export` do) needs neither numpy nor scipy."""

from __future__ import annotations

from dataclasses import dataclass

CLUSTER_RULES = ("learnt", "shape")
# The shape rule's cluster area where nothing sets one (a card without training cell areas).
FIXED_CLUSTER_AREA_PX = 6_000


@dataclass(frozen=True)
class DetectSettings:
    min_area_px: int = 150  # smaller objects are debris or noise
    max_area_px: int = 60_000  # larger ones are not cells (a bubble, the edge of the well)
    cluster_area_px: int = 0  # larger objects are clusters whatever their shape; 0: learnt no size, shape 6000
    cluster_rule: str = "learnt"  # learnt: edge/cells/cluster_rule.py; shape: cores, solidity and a size
    cluster_flag_rate: float = 0.05  # learnt: the share of its training single cells the rule flags
    reference_area_px: float = 0.0  # learnt: a typical single cell's area here; 0: the rule's training crops'
    noise_factor: float = 2.0  # foreground: local deviation above this many times the background's
    min_contrast: float = 1.5  # ... and above this many grey levels, for near-noiseless images
    min_solidity: float = 0.88  # shape: a large object less convex than this (area / convex hull) is a cluster
    skip_border: bool = True  # cells cut by the frame edge are left out: their window is incomplete
    downscale: int = 2  # work on 2x2-binned pixels: 4x faster; masks are exact to 2 px
