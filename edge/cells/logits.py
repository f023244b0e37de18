"""A cell's call from several views: probabilities averaged as logits (standard library only, so
the store and the commands that read it need no numpy)."""

from __future__ import annotations

import math
from collections.abc import Iterable

# Probabilities are clipped this far from 0 and 1 before taking logits: an int8 output can be
# exactly 0 or 1, whose logit is infinite and would outvote every other view.
LOGIT_CLIP = 1e-4


def logit(probability: float) -> float:
    p = min(max(probability, LOGIT_CLIP), 1.0 - LOGIT_CLIP)
    return math.log(p / (1.0 - p))


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def mean_of_logits(probabilities: Iterable[float]) -> float:
    """The probability whose logit is the mean of the views' logits (the views of one cell)."""
    logits = [logit(p) for p in probabilities]
    if not logits:
        raise ValueError("no views to average")
    return sigmoid(sum(logits) / len(logits))
