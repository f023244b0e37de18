"""The shipped models in models/ (the accurate default and the fast one): each card matches its
file and its limits, and on real cells each does what its card says (needs ../shared/data;
skipped with the reason when it is absent)."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, SHARED_DATA

from edge.classify.card import ModelCard, sha256_file
from edge.classify.classifier import Classifier
from edge.paths import DEFAULT_MODEL_NAME, FAST_MODEL_NAME
from train.evaluate import evaluate_classifier, load_for_model

DATA = SHARED_DATA / "fayyaz-mda231-pc3"
# name: (backbone, most bytes, most multiply-accumulates per cell)
LIMITS = {
    DEFAULT_MODEL_NAME: ("lite0", 6_000_000, 450_000_000),
    FAST_MODEL_NAME: ("lite0", 6_000_000, 40_000_000),
}
SHIPPED = sorted(LIMITS)
# make model's floor: a fit scoring a held-out condition below this ROC AUC is refused.
MIN_GROUP_AUC = float(re.search(r"^MIN_GROUP_AUC \?= ([0-9.]+)$", (REPO / "Makefile").read_text(), re.M).group(1))
# The smallest culture condition: enough cells for an AUC, quick to load.
CONDITION = "10kD2"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_matches_the_model_file(name: str) -> None:
    model = REPO / "models" / f"{name}.tflite"
    assert model.is_file(), f"{model} is missing: a shipped model (make model)"
    card = ModelCard.load(model.with_suffix(".json"))
    assert card.sha256 == sha256_file(model)
    data = card.to_dict()
    backbone, most_bytes, most_macs = LIMITS[name]
    assert card.labels == ("MDA-MB-231", "PC3") and card.positive_label == "PC3"
    assert data["file_bytes"] == model.stat().st_size < most_bytes
    architecture = data["training"]["architecture"]
    assert architecture["backbone"] == backbone and architecture["macs_per_cell"] <= most_macs
    assert "GPL" in data["data"]["licence"]
    cv = data["evaluation"]["cross_validation"]
    assert len(cv["folds"]) == 7 and cv["rule"].startswith("leave-one-group-out")
    assert data["int8_fidelity"]["label_agreement"] >= 0.99
    assert data["speed"]["pi4_estimate_ms_per_cell"] > 0
    classifier = Classifier.load(model)
    assert classifier.input_spec == card.input
    report = model.with_name(f"{name}.report.md")
    assert report.is_file() and f"{cv['summary']['roc_auc']['mean']:.3f}" in report.read_text()


@pytest.mark.parametrize("name", SHIPPED)
def test_no_shipped_model_calls_a_culture_it_never_saw_at_random(name: str) -> None:
    """make model refuses a fit that scores any held-out condition below its floor (the Makefile's
    MIN_GROUP_AUC); a shipped model under it, the fast one included, is what a lab installs and
    would call cells of a culture like that one at random or backwards."""
    folds = ModelCard.load(REPO / "models" / f"{name}.json").to_dict()["evaluation"]["cross_validation"]["folds"]
    worst = min(folds, key=lambda fold: fold["roc_auc"])
    assert worst["roc_auc"] >= MIN_GROUP_AUC, f"held out {worst['held_out']}: ROC AUC {worst['roc_auc']:.3f}"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data set not present at {DATA}")
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_on_one_real_condition_matches_its_card(name: str) -> None:
    classifier = Classifier.load(REPO / "models" / f"{name}.tflite")
    card = classifier.card.to_dict()
    dataset = load_for_model(classifier, DATA, card["data"]["group_by"], [CONDITION])
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
