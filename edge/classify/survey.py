"""Whether a set of single-cell images is what the model was trained on: images that hold several
cells (a whole frame given to `classify` gets one row for its centre cell), and crops whose cells
differ from the training cells in size or grey levels (another microscope, magnification or imaging
method), against what the model card records (data.cell_area_px, data.cell_grey). `classify` and
`evaluate` print these notes; `run` compares a rig's cell areas the same way (edge/cells/scale.py).

The comparison is a sign test against the training median: for crops like the training cells,
about half lie above it. Far more or far fewer (SIGN_TEST_Z standard errors, at least
MIN_CROPS crops) says the crops are unlike them; the calls then may not carry over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIN_CROPS = 10  # fewer say nothing about a population
# 3.5 standard errors: a random draw of training cells crosses it about once in 2,000 sets; the
# shared meng-atom brightfield crops (30) against the fast model's training areas: 3.6.
SIGN_TEST_Z = 3.5
SHOWN = 3  # file names shown per note


def grey_statistics(window: np.ndarray) -> tuple[float, float]:
    """The cell's mean grey and spread (standard deviation) over its mask (the window's non-zero
    pixels; the whole window for a model without masks), before any standardisation."""
    cell = window[window > 0] if np.any(window == 0) else window.ravel()
    if cell.size == 0:
        return 0.0, 0.0
    values = cell.astype(np.float64)
    return float(values.mean()), float(values.std())


def grey_summary(windows: Sequence[np.ndarray]) -> dict[str, dict[str, float | int]]:
    """What a card records about its training cells' grey levels (fit: data.cell_grey)."""
    stats = np.array([grey_statistics(window) for window in windows]).reshape(-1, 2)
    summary: dict[str, dict[str, float | int]] = {}
    for column, name in enumerate(("mean", "spread")):
        values = stats[:, column]
        entry: dict[str, float | int] = {"n": int(values.size)}
        if values.size:
            for label, q in (("q10", 10), ("median", 50), ("q90", 90)):
                entry[label] = round(float(np.percentile(values, q)), 2)
        summary[name] = entry
    return summary


def _training_median(card_extra: Mapping[str, Any], *keys: str) -> float | None:
    section: Any = card_extra
    for key in keys:
        section = section.get(key) if isinstance(section, Mapping) else None
    value = section.get("median") if isinstance(section, Mapping) else None
    return float(value) if isinstance(value, int | float) and value > 0 else None


def shifted(values: Sequence[float], training_median: float) -> str | None:
    """ "above"/"below" when far more crops lie on that side of the training median than chance allows."""
    if len(values) < MIN_CROPS:
        return None
    above = sum(value > training_median for value in values) / len(values)
    z = (above - 0.5) / (0.5 / math.sqrt(len(values)))
    if abs(z) < SIGN_TEST_Z:
        return None
    return "above" if z > 0 else "below"


@dataclass
class CropSurvey:
    """Each crop's cell (area, grey mean and spread) and the images holding several cells."""

    areas: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)
    crowded: list[tuple[Path, int]] = field(default_factory=list)

    @classmethod
    def of(cls, areas: Sequence[int], windows: Sequence[np.ndarray], crowded: list[tuple[Path, int]]) -> CropSurvey:
        """The survey of crops already read (evaluate's data set)."""
        survey = cls(crowded=list(crowded))
        for area, window in zip(areas, windows, strict=True):
            survey.add(Path(), int(area), window, 1)
        return survey

    def add(self, path: Path, area_px: int, window: np.ndarray, cells_in_image: int) -> None:
        mean, spread = grey_statistics(window)
        self.areas.append(float(area_px))
        self.means.append(mean)
        self.spreads.append(spread)
        if cells_in_image > 1:
            self.crowded.append((path, cells_in_image))

    def notes(self, card_extra: Mapping[str, Any]) -> list[str]:
        notes = []
        if self.crowded:
            named = ", ".join(f"{path.name}: {cells}" for path, cells in self.crowded[:SHOWN])
            more = ", ..." if len(self.crowded) > SHOWN else ""
            notes.append(
                f"{len(self.crowded)} image(s) hold several cells ({named}{more}): each row is the cell nearest "
                "the image's centre; for frames use `metascope detect`"
            )
        unlike = []
        for what, values, keys in (
            ("mask area (px)", self.areas, ("data", "cell_area_px")),
            ("mean grey", self.means, ("data", "cell_grey", "mean")),
            ("grey spread", self.spreads, ("data", "cell_grey", "spread")),
        ):
            training = _training_median(card_extra, *keys)
            side = None if training is None else shifted(values, training)
            if training is not None and side is not None:
                share = sum(v > training for v in values) / len(values)
                unlike.append(
                    f"{what}: median {np.median(values):.0f} against the training cells' {training:.0f}, "
                    f"{share:.0%} of the crops above it"
                )
        if unlike:
            notes.append(
                f"these {len(self.areas)} crops look unlike the cells the model was trained on ("
                + "; ".join(unlike)
                + "): another microscope, magnification or imaging method? Its calls may not carry over"
            )
        return notes
