"""Issue 23.3: can a rig's own unlabelled cells adapt the model? Measured leave-one-condition-out.

Each fold trains the default recipe on six culture conditions exactly as `metascope-train fit --cv
--frames` does (train.validation.run_split: int8 export, crop level and per tracked cell on the
held-out condition). Then, without any label of the held-out condition, its cells' model inputs
re-estimate the BatchNorm statistics ("AdaBN" for a network fine-tuned with frozen statistics):
each BatchNorm's input is standardised on the held-out cells and mapped onto the statistics the
training cells had there, layer by layer in order (each layer sees the layers before it already
adapted), so a channel that reads a culture's brighter or larger cells differently is put back
where the classifier learnt it. The adapted model is exported to int8 again, calibrated on the
held-out cells (what `adapt PULLED_CROPS` would have), and scored the same two ways.

A rig's pulled crops may be one cell line only (a lab images one culture at a time), so the same
adaptation is also measured from each line's held-out cells alone (float model, crop level):
an adaptation that needs both lines in the mix is not one a lab can use.

Each fold's figures are printed as a JSON line when it ends and appended to --out, with each
tracked cell's (label, probability) before and after (for a threshold study without refitting).

    PYTHONPATH=$PWD .venv/bin/python docs/experiments/adapt_statistics/study.py \
        ../shared/data/fayyaz-mda231-pc3 --out adapt.jsonl [--only 10kD2 ...]   # about 7 min a fold on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from train.cli import build_parser
from train.commands.fit import fit_request

GROUP_BY = r"(\d+kD\d)"
RATIO_LIMITS = (0.25, 4.0)  # a channel's spread may change this much at most (int8 folds it in)


def batchnorm_inputs(
    model: Any, images: np.ndarray, layers: list[Any], batch: int = 64
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance of each BatchNorm layer's input over ``images`` (every pixel)."""
    import keras

    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    sums = [np.zeros(int(layer.input.shape[-1])) for layer in layers]
    squares = [np.zeros_like(total) for total in sums]
    rows = [0] * len(layers)
    for start in range(0, len(images), batch):
        outputs = probe(images[start : start + batch, ..., None].astype(np.float32), training=False)
        for i, output in enumerate(outputs if isinstance(outputs, (list, tuple)) else [outputs]):
            values = np.asarray(output, dtype=np.float64).reshape(-1, output.shape[-1])
            sums[i] += values.sum(axis=0)
            squares[i] += (values**2).sum(axis=0)
            rows[i] += values.shape[0]
    means = [total / n for total, n in zip(sums, rows, strict=True)]
    return [(m, np.maximum(sq / n - m**2, 0.0)) for m, sq, n in zip(means, squares, rows, strict=True)]


def adapted(model: Any, source: np.ndarray, target: np.ndarray) -> Any:
    """A copy of ``model`` whose BatchNorm statistics map ``target``'s activations onto where
    ``source``'s were (see the module's docstring)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    norms = [layer for layer in copy.layers if isinstance(layer, keras.layers.BatchNormalization)]
    source_stats = batchnorm_inputs(copy, source, norms)
    for layer, (source_mean, source_var) in zip(norms, source_stats, strict=True):
        ((target_mean, target_var),) = batchnorm_inputs(copy, target, [layer])
        gamma, beta, moving_mean, moving_var = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
        eps = layer.epsilon
        ratio = np.clip(np.sqrt((target_var + eps) / (source_var + eps)), *RATIO_LIMITS)
        new_mean = target_mean - (source_mean - moving_mean) * ratio
        new_var = np.maximum((moving_var + eps) * ratio**2 - eps, 0.0)
        layer.set_weights([w.astype(np.float32) for w in (gamma, beta, new_mean, new_var)])
    return copy


def tracked_calls(evaluation: Any, dataset: Any) -> list[tuple[int, float]]:
    return [
        (int(dataset.y[call.crop]), float(call.cell.probability))
        for call in evaluation.cells
        if call.outcome == "scored" and call.cell.probability is not None
    ]


def one_fold(dataset: Any, split: Any, settings: Any, card: Any, label: str) -> dict[str, Any]:
    from train.export import convert_int8, fidelity
    from train.frames_evaluate import evaluate_frames
    from train.metrics import binary_metrics
    from train.trainer import predict
    from train.validation import artifact_classifier, artifact_metrics, run_split

    train, test = dataset.subset(split.train), dataset.subset(split.test)
    fit, exported, _ = run_split(dataset, split, settings, card, label, 0.0, None, False)
    keys = ("roc_auc", "balanced_accuracy", "sensitivity", "specificity")
    result: dict[str, Any] = {"cells": len(test), "positives": int(test.y.sum())}
    adapted_model = adapted(fit.model, train.images, test.images)
    for name, model, content in (
        ("before", fit.model, exported.content),
        ("adapted", adapted_model, convert_int8(adapted_model, test.images, settings.seed)),
    ):
        float_p = predict(model, test.images)
        crop, int8_p = artifact_metrics(content, card, test)
        with artifact_classifier(content, card) as classifier:
            frames = evaluate_frames(classifier, test)
        cell = frames.cell_metrics or {}
        result[name] = {
            "float_crop": {k: binary_metrics(test.y, float_p, card.threshold).get(k) for k in keys},
            "int8_crop": {k: crop.get(k) for k in keys},
            "int8_agreement": fidelity(float_p, int8_p, card.threshold, minimum=0.0)["label_agreement"],
            "per_tracked_cell": {k: cell.get(k) for k in keys},
            "tracked_calls": tracked_calls(frames, test),
        }
    for line in (0, 1):
        one_line = test.images[test.y == line]
        model = adapted(fit.model, train.images, one_line)
        p = predict(model, test.images)
        result[f"adapted_on_{dataset.labels[line]}_only"] = {
            "float_crop": {k: binary_metrics(test.y, p, card.threshold).get(k) for k in keys}
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=None, help="held-out conditions to run (default: all)")
    args = parser.parse_args()

    from train.isolated import in_fresh_process
    from train.make_model import base_card, load_dataset
    from train.split import cross_validation_folds

    fit_args = build_parser().parse_args(
        ["fit", str(args.data_dir), "--out", "unused", "--positive", "PC3", "--group-by", GROUP_BY, "--cv"]
    )
    fit_args.argv = None
    request = fit_request(fit_args)
    dataset = load_dataset(request)
    folds, _ = cross_validation_folds(dataset.groups, dataset.y, None, request.settings.seed, None, dataset.labels)
    card = base_card(request, dataset)
    for number, fold in enumerate(folds, 1):
        if args.only and fold.name not in args.only:
            continue
        label = f"fold {number}/{len(folds)}"
        figures = in_fresh_process(
            f"{label} ({fold.name})", one_fold, dataset, fold.split, request.settings, card, label
        )
        line = {"held_out": fold.name, **figures}
        with args.out.open("a") as out:
            out.write(json.dumps(line) + "\n")
        shown = {k: v for k, v in line.items() if k not in ("before", "adapted")}
        for name in ("before", "adapted"):
            shown[name] = {k: v for k, v in line[name].items() if k != "tracked_calls"}
        print(json.dumps(shown), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
