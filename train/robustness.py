"""How much a model's calls depend on the lamp: each cell is shown again as a camera would show it
under a dimmer or brighter lamp (a shorter or longer exposure than in training), and the share of
cells whose label changes is counted. A rig never matches the training microscope's brightness
exactly, so a model whose calls move with it cannot be trusted on a new rig.

The lamp lights the whole field, background included, and the Pi's detector then finds and masks
the cell in that frame: so each crop is put back on its own estimated background (as served inputs
are), relit, and read through the Pi's path from an image to a model input. Two frames of the same
cell under the same lamp differ as well (sensor noise, a sub-pixel shift), and that flips the cells
that sit near the threshold: the card records that share beside, since a lamp's effect is what it
adds to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.capture.images import read_grayscale
from edge.classify.classifier import Classifier
from edge.classify.preprocess import UnsegmentableCrop, single_cell_input
from train.dataset import Dataset
from train.served import camera_frame

EXPOSURE_GAINS = (0.8, 0.9, 1.1, 1.25)
CELLS_ARE = (
    "each cell's crop on its own estimated background (a pre-masked crop; an unmasked one as it is), the whole "
    "frame's grey levels scaled by the gain, then found and masked by the Pi's detector; every gain on the same "
    "frame, the second frame with fresh sensor noise and shift"
)


def lit(gray: np.ndarray, gain: float) -> np.ndarray:
    """The frame as a lamp ``gain`` times as bright would give it (uint8, clipped)."""
    return np.clip(np.rint(gray.astype(np.float32) * gain), 0, 255).astype(np.uint8)


def exposure_sensitivity(
    classifier: Classifier, dataset: Dataset, gains: tuple[float, ...] = EXPOSURE_GAINS
) -> dict[str, Any]:
    """Share of ``dataset``'s cells whose label changes under each lamp gain, and between two
    frames of the same cell under the same lamp."""
    spec = classifier.input_spec
    grays = [read_grayscale(path) for path in dataset.paths]
    seeds = [int(digest, 16) for digest in dataset.digests]  # by the file: the same frames in every fit

    def frames(draw: int) -> list[np.ndarray]:
        return [
            camera_frame(gray, np.random.default_rng([seed, draw])) for gray, seed in zip(grays, seeds, strict=True)
        ]

    def calls_on(shown: list[np.ndarray], gain: float) -> tuple[np.ndarray, np.ndarray]:
        inputs, found = np.zeros((len(shown), spec.size, spec.size), dtype=np.uint8), np.ones(len(shown), dtype=bool)
        for index, frame in enumerate(shown):
            try:
                inputs[index] = single_cell_input(lit(frame, gain), spec)
            except UnsegmentableCrop:  # the detector lost the cell: no call to compare, counted below
                found[index] = False
        return classifier.predict(inputs) >= classifier.threshold, found

    first = frames(0)  # rendered once: every gain relights the same frame
    calls, found = calls_on(first, 1.0)

    def changed(other: tuple[np.ndarray, np.ndarray]) -> float:
        both = found & other[1]
        return round(float(np.mean(other[0][both] != calls[both])), 4) if both.any() else 0.0

    relit = {f"{gain:g}": calls_on(first, gain) for gain in gains}
    return {
        "cells": len(dataset),
        "cells_are": CELLS_ARE,
        "intensity": spec.intensity,
        "label_changed_at_gain": {gain: changed(result) for gain, result in relit.items()},
        "label_changed_by_a_second_frame": changed(calls_on(frames(1), 1.0)),
        "cells_lost_at_gain": {gain: int(np.sum(found & ~result[1])) for gain, result in relit.items()},
    }
