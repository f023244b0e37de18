"""A tiny real model trained on synthetic cells in seconds: for the tests and a data-free demo.

It goes through the same preprocessing, export and card code as a real model, so the edge
tests exercise a real interpreter on a real int8 model. The one the edge tests use is
committed (tests/models/tiny.*, made by `make tiny-model`), so they need no TensorFlow; its
card records a digest of the code that made it, and tests/train/test_tiny_model.py fails
when that code has changed since (run `make tiny-model` then).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from edge.capture.synthetic_cells import KINDS, synthetic_batch
from edge.classify.card import ModelCard
from edge.classify.preprocess import InputSpec, single_cell_inputs
from train.export import convert_float, convert_int8, write_model

SPEC = InputSpec(size=32, channels=1, window_px=128, masked_background=True)
REPO = Path(__file__).resolve().parent.parent
# The code whose changes make a committed tiny model stale.
MAKERS = ("train/synthetic_model.py", "train/export.py", "train/compact_cnn.py", "edge/classify/card.py",
          "edge/classify/preprocess.py", "edge/capture/synthetic_cells.py")  # fmt: skip


def makers_digest() -> str:
    digest = hashlib.sha256()
    for name in MAKERS:
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    return digest.hexdigest()


def train_synthetic_model(out: str | os.PathLike[str], epochs: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """Train, then write OUT.tflite (int8) + OUT.json and OUT.float.tflite + OUT.float.json.

    Returns (int8 path, float path).
    """
    import keras

    from train.compact_cnn import build_cnn

    keras.utils.set_random_seed(seed)
    crops, labels = synthetic_batch(400, seed=seed)
    inputs = single_cell_inputs(crops, SPEC)
    inputs = inputs[..., np.newaxis]
    model = build_cnn(SPEC.size, widths=(8, 16, 32), convs_per_stage=1, dropout=0.0, pooling="avg", seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(inputs.astype(np.float32), labels, epochs=epochs, batch_size=32, verbose=0)
    out = Path(out)
    card = ModelCard(
        name=out.name,
        labels=KINDS,
        positive_label=KINDS[1],
        threshold=0.5,
        input=SPEC,
        sha256="0" * 64,  # replaced by write_model
        extra={
            "training": {
                "data": "synthetic round vs spindle cells (edge/capture/synthetic_cells.py)",
                "epochs": epochs,
                "seed": seed,
            },
            "made_by": {"command": "make tiny-model", "code_digest": makers_digest(), "code": list(MAKERS)},
        },
    )
    int8_path = write_model(out, convert_int8(model, inputs, seed), card)
    float_path = write_model(out.with_name(out.name + ".float"), convert_float(model), card)
    return int8_path, float_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m train.synthetic_model OUT  (writes OUT.tflite, OUT.json, OUT.float.*)")
    for path in train_synthetic_model(sys.argv[1]):
        print(f"wrote {path} ({path.stat().st_size:,} bytes) and its card")
