"""The shipped model on images unlike its training data: 30 label-free brightfield flow-
cytometry crops (meng-atom: unmasked, 128x128 JPEG, another microscope and cell lines). What it
calls them means nothing; what a user relies on is that every one is read and classified, and
that a brighter or dimmer lamp rarely changes a call. Needs ../shared/data (skipped with
the reason when it is absent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA

from edge.capture.images import read_grayscale
from edge.classify.classifier import Classifier
from edge.classify.preprocess import single_cell_input
from edge.cli import main
from edge.paths import DEFAULT_MODEL_NAME
from train.robustness import lit

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
def test_a_lamp_change_rarely_changes_a_call(gain: float) -> None:
    """The default model reads raw grey levels and was trained with lamp-like offsets, gains and
    contrast changes: a 20 % dimmer or 25 % brighter lamp moves a typical probability by under
    0.02 and changes at most 2 of the 30 calls here. Its card records the same measure on its
    training cells as the Pi sees them (the whole frame relit, then the Pi's detector and mask),
    beside the share a second frame of the same cell changes at the same lamp (sensor noise and
    a sub-pixel shift: the cells near the threshold): the lamp adds at most 2 % of calls to that."""
    classifier = Classifier.load(MODEL)
    grays = [read_grayscale(path) for path in foreign_images()]
    spec = classifier.input_spec
    as_seen = classifier.predict(np.stack([single_cell_input(gray, spec) for gray in grays]))
    relit = classifier.predict(np.stack([single_cell_input(lit(gray, gain), spec) for gray in grays]))
    assert np.median(np.abs(as_seen - relit)) < 0.02
    threshold = classifier.threshold
    assert int(((as_seen >= threshold) != (relit >= threshold)).sum()) <= 2
    recorded = classifier.card.to_dict()["evaluation"]["exposure"]
    assert recorded["label_changed_at_gain"][str(gain)] <= recorded["label_changed_by_a_second_frame"] + 0.02
