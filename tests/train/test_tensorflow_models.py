"""What edge does with models only TensorFlow can make or run: a three-class export, and the
tensorflow.lite interpreter as the last fallback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge.capture.synthetic_cells import synthetic_batch
from edge.classify.classifier import Classifier, ModelMismatchError
from edge.classify.preprocess import single_cell_inputs


@pytest.fixture(scope="module")
def held_out(tiny_model):
    crops, labels = synthetic_batch(300, seed=1234)
    return single_cell_inputs(crops, Classifier.load(tiny_model[0]).input_spec), labels


def test_three_class_model_is_refused(tiny_model, tmp_path: Path) -> None:
    import keras

    from train.export import convert_int8, write_model

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, strides=4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    card = Classifier.load(tiny_model[0]).card
    pixels = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 1)).astype(np.uint8)
    path = write_model(tmp_path / "three", convert_int8(model, pixels), card)
    with pytest.raises(ModelMismatchError, match=r"not a binary classifier: output shape \[1, 3\]"):
        Classifier.load(path)


def test_falls_back_to_tensorflow_lite_without_ai_edge_litert(tiny_model, held_out, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    classifier = Classifier.load(tiny_model[0])
    assert classifier.interpreter_name == "tensorflow.lite"
    reference = Classifier.load(tiny_model[0], interpreter="tensorflow.lite").predict(held_out[0][:16])
    np.testing.assert_allclose(classifier.predict(held_out[0][:16]), reference)


def test_a_model_that_only_takes_one_cell_per_call_is_run_one_cell_at_a_time(tiny_model, tmp_path: Path) -> None:
    """Its input claims any batch size, but it reshapes to one cell inside: a batch of 2 fails
    at invoke. Found at load, it is run one cell per call instead of failing the first frame."""
    import keras
    import tensorflow as tf

    from train.export import convert_float, write_model

    inputs = keras.Input((32, 32, 1))
    flat = keras.layers.Lambda(lambda t: tf.reshape(t, [1, 32 * 32]), output_shape=(32 * 32,))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(flat / 255.0))
    card = Classifier.load(tiny_model[0]).card
    path = write_model(tmp_path / "single", convert_float(model), card)
    classifier = Classifier.load(path)
    assert classifier.batching == "loop"
    cells = np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    expected = [float(model.predict(cell[None, ..., None].astype(np.float32), verbose=0)[0, 0]) for cell in cells]
    np.testing.assert_allclose(classifier.predict(cells), expected, atol=1e-5)
