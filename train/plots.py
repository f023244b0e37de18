"""The report's figures (PNG): ROC, confusion matrix, reliability diagram, training curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a build machine or in CI
import matplotlib.pyplot as plt
import numpy as np

from train.metrics import roc_points


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluation_figure(
    path: str | os.PathLike[str],
    y: np.ndarray,
    p: np.ndarray,
    metrics: dict[str, Any],
    labels: tuple[str, str],
    title: str,
) -> Path:
    """ROC curve, confusion matrix at the threshold and reliability diagram, side by side."""
    figure, (roc_axis, confusion_axis, calibration_axis) = plt.subplots(1, 3, figsize=(13, 4.2))
    if metrics.get("roc_auc") is not None:
        fpr, tpr = roc_points(y, p)
        roc_axis.plot(fpr, tpr, color="C0", label=f"AUC {metrics['roc_auc']:.3f}")
        roc_axis.legend(loc="lower right")
    else:  # one label only (a new culture of one line): no curve to draw
        roc_axis.text(0.5, 0.5, "one label only: no ROC", ha="center", va="center", color="0.4")
    roc_axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    roc_axis.set(
        xlabel=f"false positive rate ({labels[0]} called {labels[1]})",
        ylabel="true positive rate",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )

    c = metrics["confusion"]
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    confusion_axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        shade = "white" if count > matrix.max() / 2 else "black"
        confusion_axis.text(column, row, str(count), ha="center", va="center", color=shade, fontsize=13)
    confusion_axis.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=labels,
        yticklabels=labels,
        xlabel="called",
        ylabel="true",
        title=f"confusion at threshold {metrics['threshold']:.2f}",
    )

    bins = (metrics.get("calibration") or {}).get("bins", [])
    calibration_axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    if bins:
        centres = [b["mean_probability"] for b in bins]
        observed = [b["positive_fraction"] for b in bins]
        sizes = [20 + 200 * b["n"] / max(1, metrics["n"]) for b in bins]
        calibration_axis.plot(centres, observed, color="C1")
        calibration_axis.scatter(centres, observed, s=sizes, color="C1", zorder=3)
    calibration_axis.set(
        xlabel=f"mean predicted P({labels[1]})",
        ylabel=f"observed fraction {labels[1]}",
        title=f"reliability (ECE {metrics.get('ece', float('nan')):.3f})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    figure.suptitle(title)
    return _save(figure, Path(path))


def training_curves_figure(path: str | os.PathLike[str], histories: dict[str, dict[str, list[float]]]) -> Path:
    """Loss and ROC AUC per epoch (training and validation) for one or more fits."""
    figure, (loss_axis, auc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (name, history) in enumerate(histories.items()):
        colour = f"C{index % 10}"
        epochs = np.arange(1, len(history["loss"]) + 1)
        loss_axis.plot(epochs, history["loss"], color=colour, linewidth=1, label=f"{name} train")
        if "auc" in history:  # not when learning from a teacher's soft targets
            auc_axis.plot(epochs, history["auc"], color=colour, linewidth=1, label=f"{name} train")
        if "val_loss" in history:
            loss_axis.plot(epochs, history["val_loss"], color=colour, linewidth=1, linestyle="--", label=f"{name} val")
            auc_axis.plot(epochs, history["val_auc"], color=colour, linewidth=1, linestyle="--", label=f"{name} val")
    loss_axis.set(xlabel="epoch", ylabel="loss (weighted, label-smoothed)", title="loss")
    auc_axis.set(xlabel="epoch", ylabel="ROC AUC", title="ROC AUC (solid: train, dashed: validation)", ylim=(0.4, 1.0))
    if len(histories) <= 3:
        loss_axis.legend(fontsize=7)
    return _save(figure, Path(path))
