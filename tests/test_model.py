"""edge.classify.classifier.Classifier against real int8 and float TFLite models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from edge.capture.synthetic_cells import synthetic_batch
from edge.classify.card import ModelCardError, ModelFileError, ModelIntegrityError
from edge.classify.classifier import MAX_BATCH, Classifier, InterpreterUnavailableError, ModelMismatchError
from edge.classify.preprocess import single_cell_inputs


@pytest.fixture(scope="module")
def held_out(classifier):
    """Synthetic cells the tiny model never saw (seed differs from its training seed)."""
    crops, labels = synthetic_batch(300, seed=1234)
    return single_cell_inputs(crops, classifier.input_spec), labels


def test_load_exposes_what_the_card_says(tiny_model) -> None:
    classifier = Classifier.load(tiny_model[0])
    assert classifier.labels == ("round", "spindle")
    assert classifier.positive_label == "spindle"
    assert classifier.threshold == 0.5
    assert classifier.input_spec.size == 32
    assert classifier.interpreter_name == "ai_edge_litert"
    assert classifier.batching == "resize"
    assert classifier.describe()["input_dtype"] == "int8"


@pytest.mark.parametrize("form", ["stem", "json"])
def test_load_accepts_the_stem_or_the_card_path(tiny_model, form: str) -> None:
    path = Path(tiny_model[0])
    given = path.with_suffix("") if form == "stem" else path.with_suffix(".json")
    assert Classifier.load(given).path == path


def test_int8_model_classifies_held_out_synthetic_cells(classifier, held_out) -> None:
    inputs, labels = held_out
    probabilities = classifier.predict(inputs)
    assert probabilities.shape == (len(inputs),)
    assert probabilities.dtype == np.float32
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert ((probabilities >= 0.5) == labels).mean() >= 0.95


def test_int8_and_float_exports_agree(tiny_model, held_out) -> None:
    inputs, _ = held_out
    int8 = Classifier.load(tiny_model[0]).predict(inputs)
    float_ = Classifier.load(tiny_model[1]).predict(inputs)
    assert Classifier.load(tiny_model[1]).describe()["input_dtype"] == "float32"
    assert ((int8 >= 0.5) == (float_ >= 0.5)).mean() >= 0.99
    assert np.abs(int8 - float_).mean() < 0.05


def test_batches_of_any_size_match_one_cell_at_a_time(classifier, held_out) -> None:
    inputs = held_out[0][: MAX_BATCH + 7]  # forces a second chunk
    batched = classifier.predict(inputs)
    single = np.concatenate([classifier.predict(inputs[i : i + 1]) for i in range(len(inputs))])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    assert classifier.predict(inputs[:0]).shape == (0,)


def test_predict_rejects_wrong_shapes_and_dtypes(classifier) -> None:
    with pytest.raises(ValueError, match=r"does not fit the model input \[N, 32, 32, 1\]"):
        classifier.predict(np.zeros((2, 40, 40), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        classifier.predict(np.zeros((2, 32, 32), dtype=np.float32))


def test_label_for_uses_card_or_given_threshold(classifier) -> None:
    assert classifier.label_for(0.5) == "spindle"
    assert classifier.label_for(0.49) == "round"
    assert classifier.label_for(0.6, threshold=0.7) == "round"


# ---------------------------------------------------------------- errors
def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"nothing\.tflite: model file not found"):
        Classifier.load(tmp_path / "nothing.tflite")


def test_missing_card(model_copy: Path) -> None:
    model_copy.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match="model card not found"):
        Classifier.load(model_copy)


def test_card_that_is_not_json(model_copy: Path) -> None:
    model_copy.with_suffix(".json").write_text("{ not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        Classifier.load(model_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda card: card.pop("labels"), "missing required field 'labels'"),
        (lambda card: card.update(labels=["a", "b", "c"]), "'labels' must be two"),
        (lambda card: card.update(positive_label="other"), "'positive_label' 'other' is not one of"),
        (lambda card: card.update(threshold=1.5), "'threshold' must be a number between 0 and 1"),
        (lambda card: card["input"].pop("window_px"), "'input' lacks 'window_px'"),
        (lambda card: card["input"].update(intensity="auto"), "'input' intensity must be one of"),
        (lambda card: card.update(format="metascope-model-card/3"), "upgrade metascope"),
        # Values that used to end in a traceback (or a 931 GiB allocation) instead of a message:
        (lambda card: card["input"].update(window_px=10**6), "'input' window_px must be at most"),
        (lambda card: card["input"].update(size=100_000), "'input' size must be at most"),
        (lambda card: card["input"].update(pixel_size_um=float("nan")), "'input' pixel_size_um must be"),
        (lambda card: card["input"].update(pixel_size_um=1e-300), "'input' pixel_size_um must be"),
    ],
    ids=[
        "no-labels",
        "three-labels",
        "bad-positive",
        "bad-threshold",
        "no-window",
        "bad-intensity",
        "newer-format",
        "huge-window",
        "huge-size",
        "nan-pixel",
        "tiny-pixel",
    ],
)
def test_invalid_card_fields_are_named(model_copy: Path, change, message: str) -> None:
    card_path = model_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    change(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=message) as caught:
        Classifier.load(model_copy)
    assert str(card_path) in str(caught.value)


@pytest.mark.parametrize(
    "quantization",
    [{"input": {"dtype": "bogus"}}, {"input": "int8"}, {"input": {"dtype": ["int8"]}}, "nonsense"],
)
def test_a_garbled_quantization_record_is_a_named_card_error(model_copy: Path, quantization) -> None:
    card_path = model_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["quantization"] = quantization
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="quantization"):
        Classifier.load(model_copy)


def test_a_card_of_the_first_format_still_loads(model_copy: Path) -> None:
    card_path = model_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["format"] = "metascope-model-card/1"
    for newer in ("speed", "training"):
        card.pop(newer, None)
    card_path.write_text(json.dumps(card))
    assert Classifier.load(model_copy).labels == tuple(card["labels"])


def test_threads_default_to_every_core(tiny_model, monkeypatch) -> None:
    """A Pi 4 or 5 has four cores: the default config (model.threads = 0) uses all of them."""
    from edge.commands.common import load_classifier
    from edge.config import Config

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert Config().model.threads == 0
    assert load_classifier(str(tiny_model[0]), Config().model.threads).threads == 4
    assert Classifier.load(tiny_model[0]).describe()["threads"] == 4
    assert Classifier.load(tiny_model[0], num_threads=1).threads == 1


def test_sha256_mismatch(model_copy: Path) -> None:
    content = bytearray(model_copy.read_bytes())
    content[-1] ^= 0xFF
    model_copy.write_bytes(bytes(content))
    with pytest.raises(ModelIntegrityError, match="does not match") as caught:
        Classifier.load(model_copy)
    assert str(model_copy) in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda card: card["input"].update(size=48), "input tensor shape .* disagrees with the card"),
        (lambda card: card["input"].update(channels=3), "input tensor shape .* disagrees with the card"),
        (lambda card: card["quantization"]["input"].update(dtype="float32"), "input dtype is int8 but the card says"),
    ],
    ids=["size", "channels", "dtype"],
)
def test_card_that_disagrees_with_the_tensors(model_copy: Path, change, message: str) -> None:
    card_path = model_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    change(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelMismatchError, match=message):
        Classifier.load(model_copy)


def test_not_a_tflite_file(model_copy: Path) -> None:
    from dataclasses import replace

    from edge.classify.card import ModelCard, sha256_file

    model_copy.write_bytes(b"this is not a flatbuffer" * 10)
    card = ModelCard.load(model_copy.with_suffix(".json"))
    replace(card, sha256=sha256_file(model_copy)).write(model_copy.with_suffix(".json"))
    with pytest.raises(ModelFileError, match="cannot load it as a TFLite model"):
        Classifier.load(model_copy)


# ---------------------------------------------------------- interpreters
def test_no_interpreter_says_what_to_install(tiny_model, monkeypatch) -> None:
    for module in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
        "tensorflow",
    ):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(InterpreterUnavailableError, match="pip install ai-edge-litert"):
        Classifier.load(tiny_model[0])


def test_edge_never_imports_tensorflow(tiny_model) -> None:
    script = (
        "import sys, numpy as np\n"
        "import edge, edge.cli\n"
        "assert 'tensorflow' not in sys.modules, 'import edge pulled in tensorflow'\n"
        "from edge.classify.classifier import Classifier\n"
        f"c = Classifier.load({str(tiny_model[0])!r})\n"
        "c.predict(np.zeros((3, 32, 32), dtype=np.uint8))\n"
        "assert 'tensorflow' not in sys.modules, 'loading a model pulled in tensorflow'\n"
        "assert 'train' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)
