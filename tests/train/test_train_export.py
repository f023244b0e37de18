"""The int8 export refuses a model whose labels the int8 version does not reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.classify.preprocess import InputSpec
from edge.errors import ExitCode
from train.cli import main
from train.compact_cnn import build_cnn
from train.dataset import Dataset
from train.export import ExportError, fidelity
from train.trainer import FitResult
from train.validation import export_checked


def near_threshold_model(images: np.ndarray):
    """A model whose outputs straddle 0.5 by a hair: int8's output steps (1/256) cannot keep
    the float model's labels apart."""
    model = build_cnn(32, widths=(4, 8), convs_per_stage=1, dropout=0.0, pooling="avg", seed=1)
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


def test_a_refused_export_keeps_the_float_model_and_the_report(tmp_path: Path, monkeypatch, capsys) -> None:
    """A long fit whose int8 version fails the gate is not lost: no int8 model or card is written
    (the Pi must not run it), but the float model, its card and the report stay, as NAME.refused.*
    beside the model already at --out, which stays whole (make model's shipped one: its report
    included); the message says what to try. Exit 6 (EXPORT_REFUSED) stays."""
    import train.validation
    from edge.classify.classifier import Classifier

    # The int8 model's answers, turned around: the check must stop the export.
    real = train.validation.int8_probabilities
    monkeypatch.setattr(train.validation, "int8_probabilities", lambda content, images: 1.0 - real(content, images))
    data = write_synthetic_dataset(tmp_path / "cells", per_group=10, groups=4, seed=1)
    out = tmp_path / "models" / "cells"
    out.parent.mkdir()
    shipped = {out.with_name(f"cells{suffix}"): f"shipped {suffix}" for suffix in
               (".tflite", ".json", ".report.md", ".float.tflite", ".float.json")}  # fmt: skip
    for path, text in shipped.items():
        path.write_text(text)
    args = ["fit", str(data), "--out", str(out), "--size", "32", "--window-px", "128", "--widths", "4,8",
            "--epochs", "2", "--min-epochs", "1", "--no-leak-check", "--quiet"]  # fmt: skip
    assert main(args) == ExitCode.EXPORT_REFUSED == 6  # its own status: 3 is the camera's
    err = capsys.readouterr().err
    assert "export refused" in err and "cells.refused.float.tflite" in err and "try" in err
    # The final model holds no cell out: the agreement names the cells it was measured on.
    assert "of 80 training cells (every cell: the final model holds none out)" in err and "held-out" not in err
    # 80 cells: every calibration draw would hold all of them and calibrate alike, so one is tried.
    assert "int8 calibration draw" not in err
    assert {path: path.read_text() for path in shipped} == shipped, "the model at --out stays whole"
    assert Classifier.load(out.with_name("cells.refused.float.tflite")).labels == ("round", "spindle")
    report = out.with_name("cells.refused.report.md").read_text()
    assert "int8 export refused" in report and "ROC AUC" in report


def test_with_more_cells_than_one_draw_holds_each_calibration_draw_is_tried(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Draws differ only where there are more training cells than one draw holds: then a refused
    draw is followed by another, each said, up to three."""
    import train.validation

    real = train.validation.int8_probabilities
    monkeypatch.setattr(train.validation, "int8_probabilities", lambda content, images: 1.0 - real(content, images))
    monkeypatch.setattr(train.validation, "REPRESENTATIVE_SAMPLES", 16)
    data = write_synthetic_dataset(tmp_path / "cells", per_group=10, groups=4, seed=1)
    args = ["fit", str(data), "--out", str(tmp_path / "refused"), "--size", "32", "--window-px", "128",
            "--widths", "4,8", "--epochs", "1", "--no-leak-check", "--quiet"]  # fmt: skip
    assert main(args) == ExitCode.EXPORT_REFUSED
    err = capsys.readouterr().err
    assert [f"int8 calibration draw {n}/3" in err for n in (1, 2, 3)] == [True, True, True]


@pytest.mark.slow
def test_lite0_fit_exports_a_full_int8_model_with_a_per_tensor_head(tmp_path: Path) -> None:
    """The ImageNet-pretrained default: fine-tuned briefly on synthetic cells, exported to full
    int8 (uint8 pixels map exactly onto its int8 input), its card saying what it is and costs."""
    import os

    from edge.classify.card import CARD_FORMAT, ModelCard
    from edge.classify.classifier import Classifier
    from edge.classify.interpreter import find_interpreter
    from train.efficientnet_lite import VARIANTS
    from train.export import dense_weight_quantization

    data = write_synthetic_dataset(tmp_path / "cells", per_group=20, groups=4, seed=2)
    out = tmp_path / "lite"
    # Enough steps for BatchNorm's statistics to leave ImageNet's behind (momentum 0.9).
    args = ["fit", str(data), "--out", str(out), "--size", "32", "--window-px", "128", "--epochs", "6",
            "--batch-size", "16", "--no-leak-check", "--min-agreement", "0.9", "--quiet"]  # fmt: skip
    assert main(args) == 0
    model = out.with_suffix(".tflite")
    card = ModelCard.load(out.with_suffix(".json")).to_dict()
    assert card["format"] == CARD_FORMAT == "metascope-model-card/2"
    architecture = card["training"]["architecture"]
    assert architecture["backbone"] == "lite0" and architecture["weights"]["sha256"] == VARIANTS["lite0"].sha256
    assert architecture["weights"]["licence"] == "Apache-2.0"
    assert 0 < architecture["macs_per_cell"] < 20_000_000  # Lite0 at 32 px
    assert card["quantization"]["input"] == {"dtype": "int8", "scale": 1.0, "zero_point": -128}
    assert card["quantization"]["output"]["dtype"] == "int8"
    speed = card["speed"]
    assert set(speed["ms_per_cell"]) == {"1", str(os.cpu_count())} and speed["pi4_estimate_ms_per_cell"] > 0
    assert card["int8_fidelity"]["label_agreement"] >= 0.9
    dense = dense_weight_quantization(model.read_bytes())
    assert len(dense) == 1 and dense[0]["scales"] == 1 and dense[0]["dtype"] == "int8"
    interpreter = find_interpreter().interpreter_class(model_content=model.read_bytes())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not ops & {"QUANTIZE", "DEQUANTIZE"}, f"not full-integer: {sorted(ops)}"
    classifier = Classifier.load(model)
    assert classifier.input_spec.size == 32 and len(classifier.predict(np.zeros((3, 32, 32), np.uint8))) == 3


@pytest.mark.parametrize("backbone", ["lite1", "lite2"])
def test_a_card_of_a_larger_lite_backbone_names_its_own_weights(backbone: str) -> None:
    """`fit --backbone lite1/lite2` must not ship a card that credits Lite0's file (a lab checks
    the weights' source and licence there)."""
    from train.efficientnet_lite import VARIANTS
    from train.make_model import architecture
    from train.recipe import recipe

    described = architecture(InputSpec(size=64), recipe(backbone))
    lite = VARIANTS[backbone]
    assert described["backbone"] == backbone
    assert described["description"].startswith(f"EfficientNet-{backbone.title()} ")
    assert described["weights"]["sha256"] == lite.sha256 and lite.package in described["weights"]["source"]
    assert described["macs_per_cell"] > architecture(InputSpec(size=64), recipe("lite0"))["macs_per_cell"]
