"""Shared fixtures. The tiny model is a real model trained on synthetic cells and exported
through train/export.py, committed in tests/models/ (`make tiny-model`), so the edge tests run
a real TFLite interpreter without TensorFlow. Tests that need TensorFlow live in tests/train/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("METASCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))


TINY_MODEL = REPO / "tests" / "models" / "tiny.tflite"


@pytest.fixture(scope="session")
def tiny_model() -> tuple[Path, Path]:
    """(int8 .tflite path, float .tflite path) of the committed tiny model."""
    float_model = TINY_MODEL.with_name("tiny.float.tflite")
    for path in (TINY_MODEL, float_model):
        assert path.is_file() and path.with_suffix(".json").is_file(), f"{path} or its card is missing: make tiny-model"
    return TINY_MODEL, float_model


@pytest.fixture
def model_copy(tiny_model, tmp_path: Path) -> Path:
    """A private copy of the int8 model and card that a test may damage."""
    source = Path(tiny_model[0])
    target = tmp_path / source.name
    target.write_bytes(source.read_bytes())
    target.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    return target
