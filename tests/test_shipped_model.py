"""The default model in models/: its card matches the file, and on real cells it does what the
card says (needs ../shared/data; skipped with the reason when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.card import ModelCard, sha256_file
from edge.model import Classifier
from edge.paths import DEFAULT_MODEL_NAME
from train.evaluate import evaluate_classifier, load_for_model

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("METASCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))  # as conftest.py
MODEL = REPO / "models" / f"{DEFAULT_MODEL_NAME}.tflite"
DATA = SHARED_DATA / "fayyaz-mda231-pc3"
# The smallest culture condition: enough cells for an AUC, quick to load.
CONDITION = "10kD2"


def test_shipped_card_matches_the_model_file() -> None:
    assert MODEL.is_file(), f"{MODEL} is missing: the shipped default model (make model)"
    card = ModelCard.load(MODEL.with_suffix(".json"))
    assert card.sha256 == sha256_file(MODEL)
    data = card.to_dict()
    assert card.labels == ("MDA-MB-231", "PC3") and card.positive_label == "PC3"
    assert data["file_bytes"] == MODEL.stat().st_size < 1_000_000
    assert data["training"]["architecture"]["macs_per_cell"] <= 20_000_000
    assert "GPL" in data["data"]["licence"]
    cv = data["evaluation"]["cross_validation"]
    assert len(cv["folds"]) == 7 and cv["rule"].startswith("leave-one-group-out")
    assert data["int8_fidelity"]["label_agreement"] >= 0.99
    classifier = Classifier.load(MODEL)
    assert classifier.input_spec == card.input
    report = MODEL.with_name(f"{DEFAULT_MODEL_NAME}.report.md")
    assert report.is_file() and f"{cv['summary']['roc_auc']['mean']:.3f}" in report.read_text()


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data set not present at {DATA}")
def test_shipped_model_on_one_real_condition_matches_its_card() -> None:
    classifier = Classifier.load(MODEL)
    card = classifier.card.to_dict()
    dataset = load_for_model(classifier, DATA, card["data"]["group_by"], [CONDITION], progress=False)
    measured = evaluate_classifier(classifier, dataset)
    recorded = card["evaluation"]["final_model"]["per_group"][CONDITION]
    assert measured["n"] == recorded["n"] and measured["positives"] == recorded["positives"]
    # The same int8 artifact on the same cells: the card's figures, up to interpreter rounding.
    assert measured["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.02)
    assert measured["roc_auc"] == pytest.approx(recorded["roc_auc"], abs=0.02)
    # The final model has seen this condition, so it must do at least as well as the worst
    # cross-validation fold (a model that had not).
    cv_auc = card["evaluation"]["cross_validation"]["summary"]["roc_auc"]
    assert measured["roc_auc"] >= cv_auc["min"]
