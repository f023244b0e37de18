"""The int8 export refuses a model whose labels the int8 version does not reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.preprocess import InputSpec
from edge.synthetic import write_synthetic_dataset
from train.cli import EXIT_EXPORT_REFUSED, main
from train.dataset import Dataset
from train.export import ExportError, fidelity
from train.fit import FitResult
from train.model import build_cnn
from train.workflow import export_checked


def near_threshold_model(images: np.ndarray):
    """A model whose outputs straddle 0.5 by a hair: int8's output steps (1/256) cannot keep
    the float model's labels apart."""
    model = build_cnn(32, widths=(4, 8), convs_per_stage=1, dropout=0.0, seed=1)
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(0).normal(0, 1e-4, kernel.shape).astype(np.float32), bias * 0])
    p = model.predict(images.astype(np.float32)[..., np.newaxis], verbose=0).reshape(-1)
    logits = np.log(p / (1 - p))
    head.set_weights([head.get_weights()[0], np.full_like(bias, -np.median(logits))])
    return model


def cells(count: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 32, 32), np.uint8)
    for index in range(count):
        radius = rng.integers(4, 14)
        images[index, 16 - radius : 16 + radius, 16 - radius : 16 + radius] = rng.integers(1, 255, (2 * radius,) * 2)
    return Dataset(images, np.arange(count) % 2, np.array(["g"] * count, dtype=object), [Path("x")] * count,
                   ("a", "b"), InputSpec(size=32, window_px=32), Path("."))  # fmt: skip


def test_export_refuses_a_model_whose_int8_labels_disagree() -> None:
    held_out = cells(64, 1)
    fit = FitResult(near_threshold_model(held_out.images), {}, 1, 1, 0.0)
    with pytest.raises(ExportError, match=r"agrees with the float model on only .* \(minimum 99%"):
        export_checked(fit, cells(64, 0), held_out, threshold=0.5, seed=0)


def test_fidelity_reports_agreement_and_probability_difference() -> None:
    result = fidelity(np.array([0.1, 0.6, 0.9, 0.4]), np.array([0.12, 0.58, 0.9, 0.4]), 0.5, minimum=0.75)
    assert result["label_agreement"] == 1.0
    assert result["mean_abs_probability_difference"] == pytest.approx(0.01)
    with pytest.raises(ExportError):
        fidelity(np.array([0.49, 0.9]), np.array([0.51, 0.9]), 0.5)


def test_fit_exits_3_and_writes_nothing_when_int8_disagrees(tmp_path: Path, monkeypatch, capsys) -> None:
    import train.workflow

    # The int8 model's answers, turned around: the check must stop the export.
    real = train.workflow.int8_probabilities
    monkeypatch.setattr(train.workflow, "int8_probabilities", lambda content, images: 1.0 - real(content, images))
    data = write_synthetic_dataset(tmp_path / "cells", per_group=10, groups=4, seed=1)
    out = tmp_path / "refused"
    args = ["fit", str(data), "--out", str(out), "--size", "32", "--window-px", "128", "--widths", "4,8",
            "--epochs", "2", "--min-epochs", "1", "--no-leak-check", "--quiet"]  # fmt: skip
    assert main(args) == EXIT_EXPORT_REFUSED
    assert "export refused" in capsys.readouterr().err
    assert not list(tmp_path.glob("refused*")), "nothing may be written when the export is refused"
