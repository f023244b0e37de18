"""Evaluate an exported int8 model (the artifact the Pi runs) on a labelled folder.

It goes through edge's Classifier, exactly as `metascope classify` and the service do, and
builds inputs with the card's InputSpec via the same edge/classify/preprocess code; it needs no
TensorFlow. Fit computes its held-out figures with this same function, so `evaluate` on the
same groups reproduces them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.classify.classifier import Classifier
from train.dataset import Dataset, DatasetError, discover, load, select_groups
from train.metrics import binary_metrics


def classifier_probabilities(classifier: Classifier, images: np.ndarray) -> np.ndarray:
    return classifier.predict(images) if len(images) else np.zeros(0, np.float32)


def evaluate_classifier(classifier: Classifier, dataset: Dataset) -> dict[str, Any]:
    """Metrics of the classifier on ``dataset`` at the card's threshold, per group as well."""
    p = classifier_probabilities(classifier, dataset.images)
    return binary_metrics(dataset.y, p, classifier.threshold, dataset.groups)


def training_overlap(card_extra: dict[str, Any], dataset: Dataset) -> str | None:
    """What of ``dataset`` the model was trained on (same file content; group names), when the
    card records it (cards from before issue 13 do not): such figures are not held-out ones."""
    trained = (card_extra.get("data") or {}).get("trained_on")
    if not isinstance(trained, dict):
        return None
    known = set(trained.get("file_sha256_16") or [])
    seen = sum(digest in known for digest in dataset.digests)
    groups = sorted(set(dataset.groups.tolist()) & set(trained.get("groups") or []))
    if not seen and not groups:
        return None
    named = f"; groups named as its training groups: {', '.join(groups)}" if groups else ""
    return (
        f"trained on these cells: {seen} of {len(dataset)} cells are files this model was trained on{named}. "
        "Figures on cells a model learnt from are not held-out figures (the card's evaluation section has those)"
    )


def load_for_model(
    classifier: Classifier,
    data_dir: str | os.PathLike[str],
    group_by: str | None = None,
    groups: list[str] | None = None,
) -> Dataset:
    """The folder's cells as this model's inputs; its label folders must be the card's labels."""
    files, labels = discover(
        data_dir, group_by, classifier.positive_label if _has_label(data_dir, classifier) else None
    )
    if set(labels) != set(classifier.labels):
        raise DatasetError(
            f"{data_dir}: label folders {', '.join(labels)} are not the model's labels {', '.join(classifier.labels)}"
        )
    if groups:
        wanted = set(groups)
        unknown = sorted(wanted - {f.group for f in files})
        if unknown:
            known = ", ".join(sorted({f.group for f in files}))
            raise DatasetError(f"unknown group(s) {', '.join(unknown)}; the groups are: {known}")
        files = [f for f in files if f.group in wanted]
    dataset = load(files, labels, classifier.input_spec, data_dir)
    return select_groups(dataset, groups) if groups else dataset


def _has_label(data_dir: str | os.PathLike[str], classifier: Classifier) -> bool:
    return (Path(data_dir) / classifier.positive_label).is_dir()
