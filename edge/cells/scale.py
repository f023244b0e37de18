"""Cell size as the model card records it, against what a rig sees: the default cluster area,
and the warning when the rig's cells are far from the training cells' size.

A model learnt cells at one scale. When the card and the config both carry a pixel size, the
window is rescaled (edge.classify.preprocess.InputSpec.window_for) and nothing here is needed beyond
scaling areas. When either is missing, nothing rescales, and the only evidence of a scale
mismatch is the cells themselves: `fit` records the training cells' mask areas (pixels at the
training scale) in the card under data.cell_area_px, and `run` and `doctor` compare the
median area of the rig's cells with it. Cards without that record (older ones) just skip it.
Standard library only: the service and doctor use it, and the card is plain JSON.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge.cells.detect_settings import FIXED_CLUSTER_AREA_PX, DetectSettings

if TYPE_CHECKING:
    from edge.config import DetectConfig

# detect.cluster_rule "shape" with detect.cluster_area_px = 0: an object this many times the training cells' median
# area is a cluster whatever its shape. Single cells vary widely in area (the shared MDA-MB-231 /
# PC3 crops: 90th percentile 6x the median), so the area alone flags only what no single cell
# reaches often; smaller clusters are found by their shape (cores, solidity: edge.cells.detect).
CLUSTER_AREA_MULTIPLE = 4.0
# The rig's median cell area this many times the training median (or its inverse) is far apart:
# 2x in area is 1.4x in length, beyond what augmentation's slight rescaling covers.
AREA_RATIO_WARN = 2.0
RIG_AREA_SAMPLES = 1000  # the rig's median is over the last this many new cells
MIN_RIG_CELLS = 10  # fewer new cells than this say nothing about scale
AREA_QUANTILES = {"q10": 0.10, "q25": 0.25, "median": 0.50, "q75": 0.75, "q90": 0.90}


def area_summary(areas: Iterable[int]) -> dict[str, float | int]:
    """What a card records about its training cells' mask areas (pixels): count and quantiles."""
    values = sorted(int(a) for a in areas)
    summary: dict[str, float | int] = {"n": len(values)}
    if not values:
        return summary
    for name, q in AREA_QUANTILES.items():
        summary[name] = round(_quantile(values, q), 1)
    return summary


def _quantile(values: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted values."""
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def area_scale(card_pixel_um: float | None, rig_pixel_um: float | None) -> float:
    """Factor from an area in training pixels to the same area in rig pixels (1 when unknown)."""
    if not card_pixel_um or not rig_pixel_um:
        return 1.0
    return (card_pixel_um / rig_pixel_um) ** 2


def cluster_area_default(
    median: float | None, card_pixel_um: float | None, rig_pixel_um: float | None
) -> tuple[int, str]:
    """(cluster_area_px of the shape rule for detect.cluster_area_px = 0, where it came from), from the
    training cells' median area (CardFacts.training_median_area_px; None: the card does not record it)."""
    if median is None:
        fixed = FIXED_CLUSTER_AREA_PX
        return fixed, f"{fixed} px (fixed default: the model card records no training cell areas)"
    value = max(1, round(CLUSTER_AREA_MULTIPLE * median * area_scale(card_pixel_um, rig_pixel_um)))
    return value, f"{value} px ({CLUSTER_AREA_MULTIPLE:g} x the training cells' median area {median:g} px)"


def detect_settings(
    config: DetectConfig, median: float | None, card_pixel_um: float | None, rig_pixel_um: float | None
) -> tuple[DetectSettings, str]:
    """Detection's settings for this config and model card, and the line that says how clusters are
    told: the one place `run` and `detect` get them from. ``median``: the card's training cells' median
    area (None: it records none); the pixel sizes rescale it to the rig's pixels when both are known."""
    fixed = f"; and objects over {config.cluster_area_px} px (detect.cluster_area_px)" if config.cluster_area_px else ""
    if config.cluster_rule == "shape":
        area, where = (
            (config.cluster_area_px, "")
            if config.cluster_area_px
            else cluster_area_default(median, card_pixel_um, rig_pixel_um)
        )
        rule = f"shape rule: objects over {where or f'{area} px (detect.cluster_area_px)'}, or large with several cores"
        return config.settings(cluster_area_px=area), rule + " or under detect.min_solidity"
    rule = f"learnt rule flagging {100 * config.cluster_flag_rate:g} % of its training single cells"
    if median is None:
        reference = 0.0  # the rule's own: its training crops' median area
        where = "a single cell's area from the rule's training crops (the model card records no training cell areas)"
    else:
        reference = median * area_scale(card_pixel_um, rig_pixel_um)
        where = f"a single cell's area {reference:.0f} px from the model card's training cells"
    return config.settings(reference_area_px=reference), f"{rule}, {where}{fixed}"


def scale_unknown(card_pixel_um: float | None, rig_pixel_um: float | None) -> str | None:
    """Why nothing rescales the window, or None when both pixel sizes are known."""
    missing = [
        what
        for what, value in (("the model card", card_pixel_um), ("pipeline.pixel_size_um", rig_pixel_um))
        if not value
    ]
    return f"no pixel size in {' or '.join(missing)}: the window is not rescaled" if missing else None


def scale_warning(rig_median: float | None, rig_cells: int, training: float | None) -> str | None:
    """A warning when the rig's median cell area is far from the training cells' median
    (``training``; None: unknown), else None."""
    if training is None or rig_median is None or rig_cells < MIN_RIG_CELLS:
        return None
    ratio = rig_median / training
    if 1 / AREA_RATIO_WARN <= ratio <= AREA_RATIO_WARN:
        return None
    return (
        f"cells here have a median area of {rig_median:.0f} px over {rig_cells} cells, {ratio:.2g}x the model's "
        f"training cells ({training:.0f} px): the magnification differs from the training images' and calls "
        "will suffer; set pipeline.pixel_size_um and retrain with fit --pixel-size-um, or match the magnification"
    )


class RigAreas:
    """The areas of the last RIG_AREA_SAMPLES cells seen for the first time (median on demand)."""

    def __init__(self, samples: int = RIG_AREA_SAMPLES):
        self._areas: deque[int] = deque(maxlen=samples)
        self.seen = 0

    def add(self, areas: Iterable[int]) -> None:
        for area in areas:
            self._areas.append(int(area))
            self.seen += 1

    def median(self) -> float | None:
        return float(statistics.median(self._areas)) if self._areas else None

    def __len__(self) -> int:
        return len(self._areas)


class ScaleWatch:
    """What `run` says about scale: at start, whether the window is rescaled and whether the
    rig's cells will be compared with the card's; once enough new cells are seen, a warning when
    they are far apart (once, early), and the same warning with every summary."""

    def __init__(
        self,
        training_area: float | None,
        card_pixel_um: float | None,
        rig_pixel_um: float | None,
        whole_windows: bool = False,
    ):
        self.training_area = training_area  # the training cells' median area (CardFacts)
        self.unknown = scale_unknown(card_pixel_um, rig_pixel_um)
        self.whole_windows = whole_windows  # pipeline.mode "whole": a "cell" is a fixed window, not a cell's area
        self.areas = RigAreas()
        self._warned = False

    @property
    def active(self) -> bool:
        """Compare at all: only where nothing rescales, cells are detected and the card has the areas."""
        return self.unknown is not None and not self.whole_windows and self.training_area is not None

    def start_line(self) -> str:
        if self.unknown is None:
            return "scale: the window is rescaled from the model's pixel size to pipeline.pixel_size_um"
        if self.whole_windows:
            return f"scale: {self.unknown}; pipeline.mode whole has no cell areas to compare with the card's"
        training = self.training_area
        if training is None:
            return f"scale: {self.unknown}, and the model card records no training cell areas to compare with"
        return (
            f"scale: {self.unknown}; the cells' median area will be compared with the training cells' "
            f"({training:.0f} px) once {MIN_RIG_CELLS} cells are seen"
        )

    def add(self, first_view_areas: Iterable[int]) -> str | None:
        """Count new cells' areas; the first time they are far from the training cells', the warning."""
        if not self.active:
            return None
        self.areas.add(first_view_areas)
        if self._warned:
            return None
        warning = self.warning()
        self._warned = warning is not None
        return warning

    def warning(self) -> str | None:
        if not self.active:
            return None
        return scale_warning(self.areas.median(), self.areas.seen, self.training_area)
