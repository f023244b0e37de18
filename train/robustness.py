"""How much a model's calls depend on the lamp: each cell is read again with its grey levels
scaled (a dimmer or brighter lamp, a shorter or longer exposure than in training) and the
share of cells whose label changes is counted. A rig never matches the training microscope's
brightness exactly, so a model whose calls move with it cannot be trusted on a new rig."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.capture.images import read_grayscale
from edge.classify.classifier import Classifier
from edge.classify.preprocess import single_cell_input
from train.dataset import Dataset

EXPOSURE_GAINS = (0.8, 0.9, 1.1, 1.25)


def scaled_exposure(gray: np.ndarray, gain: float) -> np.ndarray:
    """The image as a lamp ``gain`` times as bright would give it; a masked background (0)
    stays 0 and cell pixels stay at least 1, so the mask is unchanged."""
    scaled = np.clip(np.rint(gray.astype(np.float32) * gain), 1, 255).astype(np.uint8)
    return np.where(gray > 0, scaled, 0).astype(np.uint8)


def exposure_sensitivity(
    classifier: Classifier, dataset: Dataset, gains: tuple[float, ...] = EXPOSURE_GAINS
) -> dict[str, Any]:
    """Share of ``dataset``'s cells whose label changes under each exposure gain."""
    spec = classifier.input_spec
    grays = [read_grayscale(path) for path in dataset.paths]

    def calls_at(gain: float) -> np.ndarray:
        # Every gain, 1 included, through the same path from the file: a model trained as the Pi
        # serves has other inputs in ``dataset.images``, and comparing them would count that change.
        inputs = np.stack([single_cell_input(scaled_exposure(gray, gain), spec) for gray in grays])
        return classifier.predict(inputs) >= classifier.threshold

    calls = calls_at(1.0)
    changed = {f"{gain:g}": round(float(np.mean(calls_at(gain) != calls)), 4) for gain in gains}
    return {"cells": len(dataset), "intensity": spec.intensity, "label_changed_at_gain": changed}
