"""Served inputs: each training crop as the Pi serves it, not as the data set masked it.

The Pi never sees a data set's mask: its detector finds each cell in a frame and masks it itself
(edge.classify.preprocess.crop_cell). Here each pre-masked crop is put back on its own estimated
background (edge.capture.composed.on_background: the grey level and camera noise its flattest
pixels suggest, a sub-pixel jitter) and masked by that same crop_cell, a few times with fresh
noise and jitter. A rendering the detector finds no cell in is left out and counted (the Pi would
not serve it either); a cell none of whose renderings it finds is left out of training.

The data set's own mask is not kept in the pool: the lever sweep that measured this trained on
the Pi's masks alone (docs/accuracy-levers.md) and kept its crop-level AUC, and a model fit to both
would spend capacity on a mask the Pi never makes.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np

from edge.capture.composed import Crop, on_background
from edge.capture.images import read_grayscale
from edge.classify.preprocess import CropCell, InputSpec, UnsegmentableCrop, crop_cell, finish_input, is_premasked
from train.dataset import Dataset, DatasetError

RULE = (
    "each pre-masked crop on its own estimated background (edge.capture.composed.on_background), masked by the "
    "Pi's detector (edge.classify.preprocess.crop_cell), renderings_per_cell times with fresh noise and jitter, "
    "seeded by the file's digest; one rendering drawn per cell each epoch; an unmasked crop's one rendering is the "
    "Pi's mask made at load; renderings the detector finds no cell in are left out"
)


def premasked_cell(gray: np.ndarray) -> Crop | None:
    """The cell of a pre-masked crop, ready to go back on its own background; None for an
    unmasked crop (a camera already shows it as it is)."""
    return Crop.from_image(gray, "", "") if is_premasked(gray) else None


def camera_frame(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a camera shows of a crop: a pre-masked crop back on its own estimated background
    (edge.capture.composed.on_background), an unmasked crop as it is."""
    crop = premasked_cell(gray)
    return gray if crop is None else on_background(crop, rng)


def renderings_of(
    gray: np.ndarray, spec: InputSpec, count: int, rng: np.random.Generator
) -> tuple[list[CropCell], int]:
    """The cell of one crop as the Pi masks it, ``count`` times, and how many renderings failed."""
    crop = premasked_cell(gray)  # cut out once: each rendering only redraws the background
    if crop is None:  # an unmasked crop was masked by the Pi's detector when it was loaded
        return [crop_cell(gray, spec)], 0
    cells: list[CropCell] = []
    for _ in range(count):
        with contextlib.suppress(UnsegmentableCrop):  # left out, counted by the caller
            cells.append(crop_cell(on_background(crop, rng), spec))
    return cells, count - len(cells)


def served_inputs(dataset: Dataset, count: int) -> Dataset:
    """``dataset`` with each cell's renderings as the Pi masks them, and its model inputs those of
    each cell's first rendering (what held-out figures and int8 calibration use). Its windows and
    areas stay the data set's: the card's cell statistics are the reference the Pi's cluster rule
    and scale check were tuned against, and the setting changes what the model learns from, not
    them. Cells with no rendering are left out and listed in ``skipped``."""
    side = dataset.spec.window_px
    renderings = np.zeros((len(dataset), count, side, side), dtype=np.uint8)
    counts = np.zeros(len(dataset), dtype=np.int64)
    failed = 0
    for index, path in enumerate(dataset.paths):
        # Seeded by the file's content: a cell gets the same renderings in every fit and every subset.
        rng = np.random.default_rng(int(dataset.digests[index], 16))
        cells, missed = renderings_of(read_grayscale(path), dataset.spec, count, rng)
        failed += missed
        counts[index] = len(cells)
        for slot, cell in enumerate(cells):
            renderings[index, slot] = cell.window
    first = renderings[:, 0]
    served = replace(
        dataset,
        renderings=renderings,
        rendering_counts=counts,
        images=np.stack([finish_input(window, dataset.spec) for window in first]) if len(first) else dataset.images,
        served={
            "renderings_per_cell": count,
            "renderings": int(counts.sum()),
            "unsegmentable_renderings": failed,
            "cells_left_out": int(np.sum(counts == 0)),
            "rule": RULE,
        },
    )
    left_out = np.flatnonzero(counts == 0)
    if not len(left_out):
        return served
    reasons = [
        (dataset.paths[i], f"{dataset.paths[i]}: the Pi's detector finds no cell in any rendering") for i in left_out
    ]
    kept = served.subset(np.flatnonzero(counts > 0))
    kept.skipped = [*dataset.skipped, *reasons]
    for value, label in enumerate(dataset.labels):
        if value in dataset.y and value not in kept.y:
            raise DatasetError(f"label {label!r}: the Pi's detector finds no cell in any rendering of its crops")
    return kept
