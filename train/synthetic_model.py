"""A tiny real model trained on synthetic cells in seconds: for tests and a data-free demo.

It goes through the same preprocessing, export and card code as a real model, so the edge
tests exercise a real interpreter on a real int8 model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.card import ModelCard
from edge.preprocess import InputSpec, single_cell_input
from edge.synthetic import KINDS, synthetic_batch
from train.export import convert_float, convert_int8, write_model

SPEC = InputSpec(size=32, channels=1, window_px=128, masked_background=True)


def synthetic_tensors(count: int, seed: int, spec: InputSpec = SPEC) -> tuple[np.ndarray, np.ndarray]:
    crops, labels = synthetic_batch(count, seed=seed)
    inputs = np.stack([single_cell_input(crop, spec) for crop in crops])[..., np.newaxis]
    return inputs, labels


def train_synthetic_model(out: str | os.PathLike[str], epochs: int = 8, seed: int = 0) -> tuple[Path, Path, object]:
    """Train, then write OUT.tflite (int8) + OUT.json and OUT.float.tflite + OUT.float.json.

    Returns (int8 path, float path, keras model).
    """
    import keras

    from train.model import build_cnn

    keras.utils.set_random_seed(seed)
    inputs, labels = synthetic_tensors(400, seed)
    model = build_cnn(SPEC.size, widths=(8, 16, 32), convs_per_stage=1, dropout=0.0, seed=seed)
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
        extra={"training": {"data": "synthetic round vs spindle cells (edge.synthetic)", "epochs": epochs}},
    )
    int8_path = write_model(out, convert_int8(model, inputs, seed), card)
    float_path = write_model(out.with_name(out.name + ".float"), convert_float(model), card)
    return int8_path, float_path, model
