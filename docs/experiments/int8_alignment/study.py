"""Study: how much of the int8 gate's disagreement is the logit grid's boundary, measured on
final fits of the default recipe (every cell, the gate's own check: its cells are the training
cells, as `fit` measures them).

Each seed fits the default recipe once on the shared data (the `make model` default's options),
then converts that one model three times: as calibrated (``threshold=None``), with the logit grid
aligned to the threshold alone (train.export.logit_grid_shift), and aligned after taking off the
int8 logit's mean error near the boundary (train.export.int8_logit_bias: what `fit` does). The
comparison is paired: the same weights and calibration cells, only the shift differs. Also
counted: cells whose float logit lies in the band half a step below zero that the alignment is
for, and the as-calibrated int8 logit's mean error near the boundary.

    PYTHONPATH=$PWD .venv/bin/python docs/experiments/int8_alignment/study.py \\
        ../shared/data/fayyaz-mda231-pc3 --seed 0 >> docs/experiments/int8_alignment/results.jsonl

Result (results.jsonl, seeds 0-4, 1,287 cells each, 2-core AMD EPYC, about 5 min a seed): calls
changed by int8, as calibrated / aligned alone / bias taken off and aligned: 11/16/14, 16/18/17,
24/18/16, 21/12/13, 15/20/14; in all 87 / 84 / 74 (mean agreement 98.65 / 98.69 / 98.85 %).
The 99 % gate passes 1, 1 and 0 of the 5. Why so little: in
seed 3 the int8 logit's error near the boundary has a standard deviation of 0.080 (mean -0.010),
against a grid step of 0.067; the head's own weight rounding is 0.001 of it, so the rest is the
backbone's activations (its last projection's int8 step is 0.31). Moving the boundary by half a
step against noise that wide changes few calls; narrowing the noise is what would.

The default's own `make model` fit with the third export (results-make-model.json; its fold
models reproduced the shipped card's to 0.001 AUC): held-out fold cells pooled agreed on 98.29 %
(the shipped card 98.06 %; per fold 1.0/0.981/0.978/0.994/0.952/0.982/0.991 against
1.0/0.991/0.971/0.982/0.958/0.982/0.982), but its final export was refused at 98.91 % where the
shipped one passed at 99.15 %: the code would no longer reproduce the shipped model. Not kept:
the export was put back as it was (the code measured here is commit c181cb0's train/export.py;
this script runs only against it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from train.cli import build_parser
    from train.commands.fit import fit_request

    argv = ["fit", args.data, "--out", "/tmp/int8-alignment/m", "--positive", "PC3", "--group-by", r"(\d+kD\d)",
            "--seed", str(args.seed), "--no-leak-check", "--quiet"]  # fmt: skip
    fit_args = build_parser().parse_args(argv)
    fit_args.argv = argv
    request = fit_request(fit_args)
    from train.export import convert_int8, fidelity, int8_probabilities, logit_step
    from train.make_model import fit_every_cell, load_dataset
    from train.trainer import predict

    started = time.time()
    dataset = load_dataset(request)
    fit = fit_every_cell(request, dataset, request.settings.epochs, "study")
    float_p = predict(fit.model, dataset.images)
    row = {"seed": args.seed, "cells": len(dataset), "fit_s": round(time.time() - started)}
    import train.export

    measured_bias = train.export.int8_logit_bias
    for name, threshold, bias in (
        ("as_calibrated", None, measured_bias),
        ("aligned", request.threshold, lambda *_: 0.0),
        ("bias_corrected_and_aligned", request.threshold, measured_bias),
    ):
        train.export.int8_logit_bias = bias
        content = convert_int8(fit.model, dataset.images, args.seed, threshold)
        int8_p = int8_probabilities(content, dataset.images)
        if threshold is None:
            row["int8_logit_bias"] = round(measured_bias(content, fit.model, dataset.images, args.seed), 5)
        checked = fidelity(float_p, int8_p, request.threshold, minimum=0.0)
        row[name] = {
            "label_agreement": round(checked["label_agreement"], 5),
            "cells_changed": int(((float_p >= request.threshold) != (int8_p >= request.threshold)).sum()),
            "mean_abs_dp": round(checked["mean_abs_probability_difference"], 5),
            "mean_dp": round(float(np.mean(int8_p - float_p)), 5),
            "logit_step": round(logit_step(content), 5),
        }
    step = row["as_calibrated"]["logit_step"]
    logits = np.log(np.clip(float_p, 1e-7, 1 - 1e-7) / np.clip(1 - float_p, 1e-7, 1))
    row["cells_in_band"] = int(((logits > -step / 2) & (logits < 0)).sum())
    row["wall_s"] = round(time.time() - started)
    print(json.dumps(row), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
