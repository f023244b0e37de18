"""The held-out figures a user judges a model by, computed one way for fit, CV and evaluate."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score, roc_curve

CALIBRATION_BINS = 10


def reliability(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width probability bins, and the bins themselves
    (for the reliability diagram): mean predicted probability vs observed positive fraction."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    ece = 0.0
    for index in range(bins):
        members = which == index
        count = int(members.sum())
        if count == 0:
            continue
        confidence, observed = float(p[members].mean()), float(y[members].mean())
        ece += count / len(y) * abs(confidence - observed)
        table.append(
            {
                "low": float(edges[index]),
                "high": float(edges[index + 1]),
                "n": count,
                "mean_probability": confidence,
                "positive_fraction": observed,
            }
        )
    return {"ece": float(ece), "bins": table}


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float, groups: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC AUC, sensitivity/specificity at ``threshold``,
    confusion matrix, calibration and (with ``groups``) the same per group.

    ``y`` is 1 for the positive label; ``p`` the probability of the positive label. ROC AUC
    (and balanced accuracy) are None when only one label is present.
    """
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    called = (p >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, called, labels=[0, 1]).ravel())
    both = len(np.unique(y)) == 2
    result: dict[str, Any] = {
        "n": len(y),
        "positives": int(y.sum()),
        "threshold": float(threshold),
        "accuracy": float(np.mean(called == y)) if len(y) else None,
        "balanced_accuracy": float(balanced_accuracy_score(y, called)) if both else None,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "calibration": reliability(y, p) if len(y) else None,
    }
    if result["calibration"] is not None:
        result["ece"] = result["calibration"]["ece"]
    if groups is not None:
        groups = np.asarray(groups)
        result["per_group"] = {
            str(group): binary_metrics(y[groups == group], p[groups == group], threshold)
            for group in sorted(set(groups.tolist()))
        }
        for entry in result["per_group"].values():  # per-group calibration tables are noise
            entry.pop("calibration", None)
    return result


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(y, p)
    return fpr, tpr


def summarise_folds(per_fold: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """Mean, standard deviation, min and max across folds of each metric (folds where it is
    undefined, e.g. AUC on a one-label fold, are left out and counted)."""
    summary: dict[str, dict[str, float | None]] = {}
    for key in keys:
        values = np.array([fold[key] for fold in per_fold if fold.get(key) is not None], dtype=np.float64)
        if values.size == 0:
            summary[key] = {"mean": None, "sd": None, "min": None, "max": None, "folds": 0}
            continue
        summary[key] = {
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "folds": int(values.size),
        }
    return summary
