"""The steps of `metascope-train fit`: grouped hold-out or cross-validation, the final fit,
the leaky file-level comparison, int8 export with its fidelity check, and evaluation of the
exported artifact itself."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.classify.card import ModelCard
from edge.classify.classifier import Classifier
from train.dataset import Dataset
from train.distill import Teacher, TeacherRecorder
from train.evaluate import evaluate_classifier
from train.export import (
    REPRESENTATIVE_SAMPLES,
    ExportError,
    convert_int8,
    fidelity,
    int8_probabilities,
    write_model,
)
from train.isolated import in_fresh_process
from train.metrics import binary_metrics, summarise_folds
from train.progress import log, warn
from train.split import Fold, Split, file_level_split
from train.trainer import FitResult, FitSettings, SoftTargets, fit_model, predict

# Random draws of calibration cells tried before an export is refused.
CALIBRATION_DRAWS = 3

FOLD_KEYS = ("roc_auc", "balanced_accuracy", "accuracy", "sensitivity", "specificity", "ece")


@dataclass
class Exported:
    """An int8 model checked against its float original on held-out cells."""

    content: bytes
    fidelity: dict[str, Any]


def export_checked(
    fit: FitResult,
    train: Dataset,
    held_out: Dataset,
    threshold: float,
    seed: int,
    minimum: float | None = None,
    checked_on: str = "held-out cells",
) -> Exported:
    """int8 conversion (calibrated on training cells) + agreement with the float model on
    ``held_out`` (``checked_on`` says what those cells are); raises ExportError below the bar.

    The calibration cells are a random draw of at most REPRESENTATIVE_SAMPLES training cells;
    when one draw misses the bar, up to CALIBRATION_DRAWS draws are tried and the first that
    meets it is kept. This only chooses quantisation ranges, never weights, so it cannot flatter
    the held-out figures. With no more training cells than one draw holds, every draw holds all
    of them and calibrates alike (the shared data's 1,306 cells gave 98.55 % three times): one
    is tried.
    """
    float_p = predict(fit.model, held_out.images)
    kwargs: dict[str, Any] = {"cells": checked_on} | ({} if minimum is None else {"minimum": minimum})
    draws = CALIBRATION_DRAWS if len(train) > REPRESENTATIVE_SAMPLES else 1
    failure: ExportError | None = None
    for draw in range(draws):
        content = convert_int8(fit.model, train.images, seed + draw)
        int8_p = int8_probabilities(content, held_out.images)
        try:
            checked = fidelity(float_p, int8_p, threshold, **kwargs)
        except ExportError as exc:
            failure = exc
            if draws > 1:
                warn(f"int8 calibration draw {draw + 1}/{draws}: {exc}")
            continue
        return Exported(content, {**checked, "calibration_draw": draw + 1})
    assert failure is not None
    raise failure


@contextmanager
def artifact_classifier(content: bytes, card: ModelCard) -> Iterator[Classifier]:
    """The int8 model as the Pi runs it: written with its card, loaded through edge's Classifier
    (the code path of `metascope-train evaluate`)."""
    with tempfile.TemporaryDirectory(prefix="metascope-eval-") as folder:
        yield Classifier.load(write_model(Path(folder) / card.name, content, card))


def artifact_metrics(content: bytes, card: ModelCard, dataset: Dataset) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics and probabilities of the int8 artifact on ``dataset``."""
    with artifact_classifier(content, card) as classifier:
        p = classifier.predict(dataset.images) if len(dataset) else np.zeros(0, np.float32)
        return evaluate_classifier(classifier, dataset), p


@dataclass
class FoldOutcome:
    name: str
    split_groups: dict[str, list[str]]
    metrics: dict[str, Any]  # of the int8 model on the held-out part
    float_metrics: dict[str, Any]
    fidelity: dict[str, Any]
    best_epoch: int
    epochs_run: int
    seconds: float
    history: dict[str, list[float]]
    held_out_index: np.ndarray
    probabilities: np.ndarray  # int8 model, held-out cells
    per_tracked_cell: dict[str, Any] | None = None  # fit --frames: the int8 model per tracked cell

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "held_out": self.name,
            "groups": self.split_groups,
            "n": m["n"],
            "positives": m["positives"],
            **{key: m.get(key) for key in FOLD_KEYS},
            "float_roc_auc": self.float_metrics.get("roc_auc"),
            "int8_label_agreement": self.fidelity["label_agreement"],
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 1),
            **({"per_tracked_cell": self.per_tracked_cell} if self.per_tracked_cell is not None else {}),
        }


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def tracked_cell_figures(content: bytes, card: ModelCard, test: Dataset) -> dict[str, Any]:
    """The int8 artifact per tracked cell on ``test`` (train/frames_evaluate.py), beside its crop
    level figures on the same crops: what a lab's rig would log for this held-out group."""
    from train.frames_evaluate import evaluate_frames

    with artifact_classifier(content, card) as classifier:
        result = evaluate_frames(classifier, test)
    cell, crop = result.cell_metrics or {}, result.matched_crop_metrics or {}
    return {
        "roc_auc": cell.get("roc_auc"),
        "balanced_accuracy": cell.get("balanced_accuracy"),
        "crop_roc_auc": crop.get("roc_auc"),
        "crop_balanced_accuracy": crop.get("balanced_accuracy"),
        "counts": result.counts,
    }


def run_split(
    dataset: Dataset,
    split: Split,
    settings: FitSettings,
    card: ModelCard,
    label: str,
    min_agreement: float | None = None,
    teacher: SoftTargets | None = None,
    frames: bool = False,
) -> tuple[FitResult, Exported, FoldOutcome]:
    """Fit on the split's training part (early stopping on its validation part, if it has
    one and the settings ask for it), export to int8 and measure the artifact on the test part.

    ``min_agreement`` None: the default bar; 0: record agreement without enforcing it (a
    cross-validation fold's model is measured, never shipped)."""
    train, validation, test = (
        dataset.subset(split.train),
        dataset.subset(split.validation),
        dataset.subset(split.test),
    )
    fit = fit_model(train, validation, settings, label=label, teacher=teacher)
    exported = export_checked(fit, train, test, card.threshold, settings.seed, min_agreement)
    metrics, p = artifact_metrics(exported.content, card, test)
    float_metrics = binary_metrics(test.y, predict(fit.model, test.images), card.threshold)
    outcome = FoldOutcome(
        name=label,
        split_groups=split.groups_of(dataset.groups),
        metrics=metrics,
        float_metrics=float_metrics,
        fidelity=exported.fidelity,
        best_epoch=fit.best_epoch,
        epochs_run=fit.epochs_run,
        seconds=fit.seconds,
        history=fit.history,
        held_out_index=split.test,
        probabilities=p,
        per_tracked_cell=tracked_cell_figures(exported.content, card, test) if frames else None,
    )
    return fit, exported, outcome


def train_fold(
    dataset: Dataset,
    split: Split,
    settings: FitSettings,
    card: ModelCard,
    label: str,
    teacher: SoftTargets | None,
    frames: bool,
    views: np.ndarray | None,
) -> tuple[FoldOutcome, np.ndarray | None]:
    """One cross-validation fold, run in a process of its own (train/isolated.py): its outcome,
    and its model's answers on ``views`` (a recorder's fixed views of its training cells) if given."""
    fit, _, outcome = run_split(dataset, split, settings, card, label, 0.0, teacher, frames)
    return outcome, None if views is None else predict(fit.model, views)


@dataclass
class CrossValidation:
    rule: str
    folds: list[FoldOutcome]
    pooled: dict[str, Any]  # all held-out cells together (each predicted by the fold that held it out)
    summary: dict[str, dict[str, float | None]]
    pooled_y: np.ndarray = field(repr=False)
    pooled_p: np.ndarray = field(repr=False)
    seconds: float = 0.0

    @property
    def chosen_epochs(self) -> int:
        """The final fit's epoch count: the median of the folds' best epochs (with a fixed
        epoch count, every fold's best epoch is its last, so this is that count)."""
        return int(np.ceil(np.median([fold.best_epoch for fold in self.folds])))

    def to_dict(self) -> dict[str, Any]:
        fidelity_cells = sum(f.fidelity["cells"] for f in self.folds)
        agreeing = sum(f.fidelity["label_agreement"] * f.fidelity["cells"] for f in self.folds)
        return {
            "rule": self.rule,
            "folds": [fold.summary() for fold in self.folds],
            "summary": self.summary,
            "pooled": {k: v for k, v in self.pooled.items() if k not in ("calibration", "per_group")},
            "int8_label_agreement": agreeing / fidelity_cells,
            "chosen_epochs": self.chosen_epochs,
            "seconds": round(self.seconds, 1),
            **self.tracked_cell_summary(),
        }

    def tracked_cell_summary(self) -> dict[str, Any]:
        """fit --frames: per tracked cell and crop level (same crops), summarised over the folds."""
        figures = [fold.per_tracked_cell for fold in self.folds if fold.per_tracked_cell is not None]
        if not figures:
            return {}
        keys = ("roc_auc", "balanced_accuracy", "crop_roc_auc", "crop_balanced_accuracy")
        return {"per_tracked_cell_summary": summarise_folds(figures, keys)}


def cross_validate(
    dataset: Dataset,
    folds: list[Fold],
    rule: str,
    settings: FitSettings,
    card: ModelCard,
    teacher: Teacher | None = None,
    recorder: TeacherRecorder | None = None,
    frames: bool = False,
) -> CrossValidation:
    """Every fold: fit, export, score the held-out group with the int8 model. ``teacher``: each
    fold's student learns from the same fold's teacher; ``recorder``: each fold's model scores
    the fixed views of its own training cells, for a later student."""
    started = time.monotonic()
    outcomes = []
    for number, fold in enumerate(folds, 1):
        groups = fold.split.groups_of(dataset.groups)
        validation = f" (validation {', '.join(groups['validation'])})" if groups["validation"] else ""
        log(f"cross-validation fold {number}/{len(folds)}: held out {fold.name}{validation}")
        targets = None if teacher is None else teacher.targets(fold.name, fold.split.train)
        label = f"fold {number}/{len(folds)}"
        views = None if recorder is None else recorder.views[fold.split.train].reshape(-1, *recorder.views.shape[2:])
        what = f"cross-validation {label} ({fold.name})"
        outcome, answers = in_fresh_process(
            what, train_fold, dataset, fold.split, settings, card, label, targets, frames, views
        )
        if recorder is not None:
            recorder.record(fold.name, fold.split.train, lambda images, answers=answers: answers)
        outcome.name = fold.name
        m = outcome.metrics
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        bal = "n/a" if m["balanced_accuracy"] is None else f"{m['balanced_accuracy']:.3f}"
        log(
            f"fold {number}/{len(folds)} {fold.name}: ROC AUC {auc}, balanced accuracy {bal}, "
            f"best epoch {outcome.best_epoch}"
        )
        if outcome.per_tracked_cell is not None:
            cell = outcome.per_tracked_cell
            log(f"fold {number}/{len(folds)} {fold.name} per tracked cell: ROC AUC {_shown(cell['roc_auc'])} "
                f"(crop level, same crops {_shown(cell['crop_roc_auc'])})")  # fmt: skip
        outcomes.append(outcome)
    index = np.concatenate([o.held_out_index for o in outcomes])
    p = np.concatenate([o.probabilities for o in outcomes])
    pooled = binary_metrics(dataset.y[index], p, card.threshold, dataset.groups[index])
    summary = summarise_folds([o.metrics for o in outcomes], FOLD_KEYS)
    return CrossValidation(rule, outcomes, pooled, summary, dataset.y[index], p, time.monotonic() - started)


def leak_check(dataset: Dataset, settings: FitSettings, threshold: float) -> dict[str, Any]:
    """The same training on a random file-level split: what a leaky evaluation would claim."""
    split = file_level_split(dataset.y, settings.seed)
    log("file-level split (for comparison only: it leaks near-duplicates across the split)")
    fit = fit_model(dataset.subset(split.train), dataset.subset(split.validation), settings, label="file-level")
    test = dataset.subset(split.test)
    metrics = binary_metrics(test.y, predict(fit.model, test.images), threshold)
    return {
        "rule": split.rule,
        "test_cells": metrics["n"],
        **{key: metrics.get(key) for key in ("roc_auc", "balanced_accuracy", "accuracy")},
        "note": "float Keras model; the same settings and seed as the shipped fit",
    }
