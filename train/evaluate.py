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
from train.dataset import Dataset, DatasetError, files_under, load, select_groups
from train.metrics import binary_metrics
from train.served import served_inputs


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


def served_renderings(card_extra: dict[str, Any]) -> int | None:
    """How many renderings a crop had in the fit of a model trained as the Pi serves (fit --inputs
    served), from its card; None for a model trained on the data set's masks."""
    served = (card_extra.get("data") or {}).get("served_inputs")
    return served["renderings_per_cell"] if served else None


def inputs_note(card_extra: dict[str, Any]) -> str | None:
    """What a model trained as the Pi serves is scored on here."""
    if served_renderings(card_extra) is None:
        return None
    return (
        "this model learnt from the Pi's masks (fit --inputs served), so each pre-masked crop was scored as the Pi "
        "serves it: on its own background, masked by the Pi's detector, the rendering its fit's figures used; "
        "--frames scores whole tracked cells"
    )


def load_for_model(
    classifier: Classifier,
    data_dir: str | os.PathLike[str],
    group_by: str | None = None,
    groups: list[str] | None = None,
    label_map: dict[str, str] | None = None,
) -> Dataset:
    """The folder's cells as this model's inputs, made as its fit made them (a model trained as the
    Pi serves scores each crop's first rendering, seeded by the file: evaluate reproduces the
    card's figures). Its label folders are the card's labels, or map onto them (``label_map``:
    folder name -> label); one label alone is a new culture of one line (its recall is what can
    be measured)."""
    labels = classifier.labels
    files = files_under(Path(data_dir), model_label_folders(Path(data_dir), labels, label_map or {}), labels, group_by)
    if groups:
        wanted = set(groups)
        unknown = sorted(wanted - {f.group for f in files})
        if unknown:
            known = ", ".join(sorted({f.group for f in files}))
            raise DatasetError(f"unknown group(s) {', '.join(unknown)}; the groups are: {known}")
        files = [f for f in files if f.group in wanted]
    dataset = load(files, labels, classifier.input_spec, data_dir)
    dataset = select_groups(dataset, groups) if groups else dataset
    renderings = served_renderings(classifier.card.extra)
    return dataset if renderings is None else served_inputs(dataset, renderings)


def model_label_folders(root: Path, labels: tuple[str, str], label_map: dict[str, str]) -> dict[Path, str]:
    """Each label folder of ``root`` -> the model label it holds (its name, or what the map says)."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected DATA_DIR/<label>/.../<image>)")
    wrong = sorted(set(label_map.values()) - set(labels))
    if wrong:
        raise DatasetError(f"--label-map names {', '.join(wrong)}: not a label of the model ({', '.join(labels)})")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    label_of = {folder: label_map.get(folder.name, folder.name) for folder in folders}
    strangers = [folder.name for folder, label in label_of.items() if label not in labels]
    if strangers or not folders:
        free = [label for label in labels if label not in label_of.values()] or list(labels)
        named = ", ".join(folder.name for folder in folders) or "none"
        raise DatasetError(
            f"{root}: label folders {named} are not the model's labels {', '.join(labels)}; name each folder as a "
            f"label, or map it: --label-map {(strangers or ['FOLDER'])[0]}={free[0]}"
        )
    for label in labels:
        sharing = [folder.name for folder, mapped in label_of.items() if mapped == label]
        if len(sharing) > 1:
            raise DatasetError(f"{root}: folders {', '.join(sharing)} all hold label {label}; keep one per label")
    return label_of


def one_label_recall(metrics: dict[str, Any], labels: tuple[str, str]) -> dict[str, float] | None:
    """With cells of one label only, that label's recall (the share called as it): AUC and
    balanced accuracy need both labels."""
    if not metrics["n"] or 0 < metrics["positives"] < metrics["n"]:
        return None
    if metrics["positives"]:
        return {labels[1]: metrics["sensitivity"]}
    return {labels[0]: metrics["specificity"]}
