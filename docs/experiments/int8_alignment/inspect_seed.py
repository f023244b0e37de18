"""Where the int8 calls differ, for one seed of study.py: each cell's float logit, its int8 logit as
calibrated, and the head's own share of the error (its weights rounded per tensor, applied to the
float pooled features), saved to /tmp/inspect_seedN.npz. Runs against commit c181cb0 (its
train.export.int8_logits). Seed 3 gave, on the 513 cells with |logit| < 1: int8 error mean -0.010,
standard deviation 0.080 (grid step 0.067); the head's share sd 0.001.

    PYTHONPATH=$PWD .venv/bin/python docs/experiments/int8_alignment/inspect_seed.py 3
"""

from __future__ import annotations

import sys

import numpy as np


def main(seed: int) -> None:
    from train.cli import build_parser
    from train.commands.fit import fit_request

    argv = ["fit", "../shared/data/fayyaz-mda231-pc3", "--out", "/tmp/int8-alignment/m", "--positive", "PC3",
            "--group-by", r"(\d+kD\d)", "--seed", str(seed), "--no-leak-check", "--quiet"]  # fmt: skip
    args = build_parser().parse_args(argv)
    args.argv = argv
    request = fit_request(args)
    import keras

    from train.export import convert_int8, int8_logits, int8_probabilities, logit_step
    from train.make_model import fit_every_cell, load_dataset
    from train.trainer import predict

    dataset = load_dataset(request)
    fit = fit_every_cell(request, dataset, request.settings.epochs, "inspect")
    p = np.clip(predict(fit.model, dataset.images).astype(np.float64), 1e-7, 1 - 1e-7)
    content = convert_int8(fit.model, dataset.images, seed, None)
    images = dataset.images[..., None].astype(np.float32)
    pooled = keras.Model(fit.model.input, fit.model.get_layer("pool").output).predict(images, verbose=0)
    weights, _ = fit.model.get_layer("head").get_weights()
    scale = np.abs(weights).max() / 127  # per tensor, as the int8 dense layer has it
    head_error = (pooled @ (np.round(weights / scale) * scale - weights)).reshape(-1)
    np.savez(
        f"/tmp/inspect_seed{seed}.npz",
        z=np.log(p / (1 - p)),
        zi=int8_logits(content, dataset.images),
        pi=int8_probabilities(content, dataset.images),
        step=logit_step(content),
        head_error=head_error,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
