"""The shipped model on images unlike its training data: 30 label-free brightfield flow-
cytometry crops (meng-atom: unmasked, 128x128 JPEG, another microscope and cell lines). What it
calls them means nothing; what a user relies on is that every one is read and classified, and
that a brighter or dimmer lamp does not change the calls. Needs ../shared/data (skipped with
the reason when it is absent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA

from edge.cli import main
from edge.model import Classifier
from edge.paths import DEFAULT_MODEL_NAME
from edge.preprocess import read_grayscale, single_cell_input
from train.robustness import scaled_exposure

FOREIGN = SHARED_DATA / "meng-atom"
MODEL = REPO / "models" / f"{DEFAULT_MODEL_NAME}.tflite"
pytestmark = pytest.mark.skipif(not FOREIGN.is_dir(), reason=f"shared data set not present at {FOREIGN}")


def foreign_images() -> list[Path]:
    return sorted(FOREIGN.glob("*/*.jpg"))


def test_every_foreign_image_is_classified(capsys) -> None:
    images = foreign_images()
    assert len(images) == 30
    status = main(["classify", *map(str, images), "--model", str(MODEL), "--json"])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert status == 0, err
    assert [row["file"] for row in rows] == [str(path) for path in images]
    assert all(math.isfinite(row["probability"]) and 0.0 <= row["probability"] <= 1.0 for row in rows)


@pytest.mark.parametrize("gain", [0.8, 1.25])
def test_a_lamp_change_does_not_change_the_calls(gain: float) -> None:
    classifier = Classifier.load(MODEL)
    assert classifier.input_spec.intensity == "standardised"
    grays = [read_grayscale(path) for path in foreign_images()]
    spec = classifier.input_spec
    as_seen = classifier.predict(np.stack([single_cell_input(gray, spec) for gray in grays]))
    relit = classifier.predict(np.stack([single_cell_input(scaled_exposure(gray, gain), spec) for gray in grays]))
    # Probabilities barely move; only a cell within that margin of the threshold may change
    # its call (an int8 output moves in steps of 1/256).
    margin = 0.05
    assert np.abs(as_seen - relit).max() < margin
    clear = np.abs(as_seen - classifier.threshold) >= margin
    assert clear.sum() >= 15, "most foreign cells are called with some margin"
    assert np.array_equal((as_seen >= classifier.threshold)[clear], (relit >= classifier.threshold)[clear])
