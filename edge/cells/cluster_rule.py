"""The learnt cluster rule: a logistic regression on an object's shape figures
(edge.cells.cluster_features), learnt from frames composed of real single-cell crops (one crop
= one cell; two or three touching crops = a cluster) by `metascope bench clusters --write-rule`.

Its threshold is a share of single cells it may flag: the rule keeps, for every 1 % from 0 to
100 %, the score that share of its training single cells exceeds, and detect.cluster_flag_rate
picks one. Its areas are relative to a reference single-cell area: the model card's training
cells' median when the card records one (rescaled to the rig's pixels when both pixel sizes are
known), else the median of the crops the rule learnt from (``reference_area_px``).

Beside it, one fixed clause the composites of real crops rarely show but a rig with compact
(rounded) cells does: two compact cells meeting at a clear waist (``compact_pairs``), which the
regression, learnt on irregular spread cells, scores low. On the composites it flags about 0.5 %
of the single cells (2 of 416 at 60 crops a condition, likely crops of several cells themselves).
Its waist of 0.35 keeps clear of a borderline synthetic pair whose waist wanders 0.15-0.32 with
sensor noise (at 0.3 its flag flickered and restarted its views on a still field).

numpy only, parameters in plain JSON (edge/cells/cluster_rule.json ships with the package).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edge.cells.cluster_features import FEATURES

RULE_PATH = Path(__file__).with_name("cluster_rule.json")
FORMAT = "metascope-cluster-rule/1"
# Ridge on the standardised weights: keeps them finite where a figure separates alone. Linear
# in the figures on purpose: pairwise products raised pairs caught by a few points leave-one-
# condition-out but learnt a falling score for very large objects (spread single cells are large).
L2 = 1e-2
NEWTON_STEPS = 50


@dataclass(frozen=True)
class ClusterRule:
    features: tuple[str, ...]
    mean: tuple[float, ...]  # standardisation of each figure
    scale: tuple[float, ...]
    weights: tuple[float, ...]  # on the standardised figures
    bias: float
    reference_area_px: float  # the training crops' median area: log_area's unit without a card's
    single_quantiles: tuple[float, ...]  # 101: the score exceeded by 100 %, 99 %, ... 0 % of training singles
    trained_on: dict[str, Any] = field(default_factory=dict)  # where it came from, what it scored

    def scores(self, figures: np.ndarray) -> np.ndarray:
        """Log-odds of "several cells" for each row of FEATURES figures."""
        standard = (np.atleast_2d(figures) - np.asarray(self.mean)) / np.asarray(self.scale)
        return standard @ np.asarray(self.weights) + self.bias

    def threshold(self, flag_rate: float) -> float:
        """The score above which the rule flags ``flag_rate`` of its training single cells."""
        position = (1.0 - min(max(flag_rate, 0.0), 1.0)) * (len(self.single_quantiles) - 1)
        return float(np.interp(position, np.arange(len(self.single_quantiles)), self.single_quantiles))

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterRule:
        data = json.loads(text)
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        rule = cls(**data)
        if rule.features != FEATURES or len(rule.weights) != len(FEATURES):
            raise ValueError(f"the rule reads other figures than this version measures ({', '.join(FEATURES)})")
        return rule


@cache
def shipped_rule() -> ClusterRule:
    """The rule that ships with the package (learnt from the shared crops)."""
    return ClusterRule.from_json(RULE_PATH.read_text())


def learn(figures: np.ndarray, clusters: np.ndarray, reference_area_px: float, **trained_on: Any) -> ClusterRule:
    """A rule from FEATURES figures (one row per detected object) and whether each holds several
    cells: ridge logistic regression by Newton's method, then its scores on the single cells."""
    figures = np.asarray(figures, dtype=np.float64)
    target = np.asarray(clusters, dtype=np.float64)
    mean, scale = figures.mean(axis=0), figures.std(axis=0) + 1e-9
    design = np.column_stack([np.ones(len(figures)), (figures - mean) / scale])
    coef = np.zeros(design.shape[1])
    ridge = L2 * np.eye(design.shape[1])
    ridge[0, 0] = 0.0  # the bias is not shrunk
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-design @ coef))
        gradient = design.T @ (p - target) + ridge @ coef
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + ridge
        step = np.linalg.solve(hessian, gradient)
        coef -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    singles = design[target == 0] @ coef
    quantiles = np.quantile(singles, np.linspace(0.0, 1.0, 101)) if singles.size else np.zeros(101)
    return ClusterRule(
        features=FEATURES,
        mean=tuple(round(float(v), 6) for v in mean),
        scale=tuple(round(float(v), 6) for v in scale),
        weights=tuple(round(float(v), 6) for v in coef[1:]),
        bias=round(float(coef[0]), 6),
        reference_area_px=round(float(reference_area_px), 1),
        single_quantiles=tuple(round(float(v), 6) for v in quantiles),
        trained_on=trained_on,
    )


# The compact pair: a waist at least this deep, between parts whose thinner one is at least this
# thick against the thicker, in an object at least this solid (the outline of two round cells
# touching: about 0.88 for two equal discs meeting at a point, higher as they press together).
COMPACT_WAIST = 0.35
COMPACT_SECOND_CORE = 0.6
COMPACT_SOLIDITY = 0.85


def compact_pairs(figures: np.ndarray) -> np.ndarray:
    """Whether each row of FEATURES figures is two compact cells meeting at a clear waist."""
    rows = np.atleast_2d(figures)
    column = {name: rows[:, i] for i, name in enumerate(FEATURES)}
    return (
        (column["waist"] >= COMPACT_WAIST)
        & (column["second_core"] >= COMPACT_SECOND_CORE)
        & (column["solidity"] >= COMPACT_SOLIDITY)
    )
