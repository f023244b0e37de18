"""Shared fixtures. The tiny model is a real Keras model trained on synthetic cells and
exported through train/export.py, so edge tests run a real TFLite interpreter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("METASCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """(int8 .tflite path, float .tflite path, keras model), trained once per test session."""
    from train.synthetic_model import train_synthetic_model

    return train_synthetic_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def model_copy(tiny_model, tmp_path: Path) -> Path:
    """A private copy of the int8 model and card that a test may damage."""
    source = Path(tiny_model[0])
    target = tmp_path / source.name
    target.write_bytes(source.read_bytes())
    target.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    return target
