"""The classifier: a .tflite model plus its card, probabilities for a batch of cells per call."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.classify.card import (
    ModelCard,
    ModelCardError,
    ModelError,
    ModelFileError,
    ModelIntegrityError,
    card_path_for,
)
from edge.classify.interpreter import MAX_THREADS, InterpreterUnavailableError, find_interpreter
from edge.classify.native_noise import native_noise_filtered
from edge.classify.preprocess import InputSpec
from edge.classify.tensors import ModelMismatchError, check_tensors
from edge.paths import read_regular_file

__all__ = [
    "Classifier",
    "InterpreterUnavailableError",
    "ModelCardError",
    "ModelError",
    "ModelFileError",
    "ModelIntegrityError",
    "ModelMismatchError",
    "ModelOutputError",
    "not_probabilities",
]


def resolve_threads(threads: int | None) -> int:
    """Interpreter threads: None or 0 means every core of this machine (a Pi 4 or 5 has 4)."""
    if threads is None or threads == 0:
        return os.cpu_count() or 1
    if not 0 < threads <= MAX_THREADS:
        raise ValueError(f"threads must be 0 (every core) to {MAX_THREADS}, got {threads}")
    return threads


# Largest batch handed to the interpreter at once: bounds activation memory on a Pi while
# keeping per-call overhead negligible.
MAX_BATCH = 64
# A model this project makes is a few MB (EfficientNet-Lite0 int8: about 4); the cap keeps a
# wrong file (a disk image, /dev/zero behind a link) from filling a Pi's memory.
MAX_MODEL_BYTES = 256 << 20


def not_probabilities(values: np.ndarray) -> np.ndarray:
    """Which values are no probability: NaN, infinite, or outside 0..1."""
    return ~np.isfinite(values) | (values < 0.0) | (values > 1.0)


class ModelOutputError(ModelError, ValueError):
    """The model answered something that is not a probability."""


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """Accept NAME.tflite, NAME.json or NAME; return the .tflite path."""
    path = Path(path)
    if path.suffix == ".json":
        return path.with_suffix(".tflite")
    if path.suffix != ".tflite" and not path.is_file():
        return path.with_name(path.name + ".tflite")
    return path


class Classifier:
    """One interpreter, allocated at load, that turns preprocessed cells into probabilities."""

    def __init__(
        self,
        path: Path,
        card: ModelCard,
        interpreter: Any,
        interpreter_name: str,
        interpreter_version: str,
        threads: int = 1,
    ):
        self.path = path
        self.threads = threads
        self.card = card
        self.interpreter_name = interpreter_name
        self.interpreter_version = interpreter_version
        self._interpreter = interpreter
        tensors = check_tensors(path, card, interpreter)
        self._input, self._output, self._input_lut = tensors.input, tensors.output, tensors.input_lut
        self.batching = tensors.batching  # "resize": a batch per interpreter call; "loop": a cell per call
        self._batch_size = int(tensors.input["shape"][0])  # the input tensor's batch dimension now

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        num_threads: int | None = None,
        interpreter: str | None = None,
    ) -> Classifier:
        """Open NAME.tflite and NAME.json, verify the sha256, allocate the interpreter once.

        ``num_threads``: interpreter threads; None or 0 = every core (``resolve_threads``).

        ``interpreter`` restricts the search to one of ai_edge_litert, tflite_runtime,
        tensorflow.lite; by default the first importable one in that order is used.
        """
        model_path = resolve_model_path(path)
        try:
            content = read_regular_file(model_path, MAX_MODEL_BYTES)
        except FileNotFoundError as exc:
            raise ModelFileError(f"{model_path}: model file not found") from exc
        except OSError as exc:
            raise ModelFileError(f"{model_path}: cannot read model file: {exc}") from exc
        if not content:
            raise ModelFileError(f"{model_path}: model file is empty")
        card = ModelCard.load(card_path_for(model_path))
        actual = hashlib.sha256(content).hexdigest()  # of the bytes the interpreter gets, read once
        if actual != card.sha256:
            raise ModelIntegrityError(
                f"{model_path}: sha256 {actual} does not match {card.sha256} recorded in "
                f"{card_path_for(model_path)}; the model file was changed or the card belongs to another model"
            )
        choice = find_interpreter(interpreter)
        threads = resolve_threads(num_threads)
        try:
            with native_noise_filtered():
                tflite = choice.interpreter_class(model_content=content, num_threads=threads)
                tflite.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{model_path}: {choice.name} cannot load it as a TFLite model: {exc}") from exc
        return cls(model_path, card, tflite, choice.name, choice.version, threads)

    # ------------------------------------------------------------ properties
    @property
    def labels(self) -> tuple[str, str]:
        return self.card.labels

    @property
    def positive_label(self) -> str:
        return self.card.positive_label

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def input_spec(self) -> InputSpec:
        return self.card.input

    @property
    def sha256(self) -> str:
        return self.card.sha256

    def describe(self) -> dict[str, Any]:
        return {
            "model": str(self.path),
            "name": self.card.name,
            "sha256": self.card.sha256,
            "interpreter": self.interpreter_name,
            "interpreter_version": self.interpreter_version,
            "threads": self.threads,
            "input_dtype": str(np.dtype(self._input["dtype"])),
            "batching": self.batching,
            "labels": list(self.labels),
            "positive_label": self.positive_label,
            "threshold": self.threshold,
        }

    # ------------------------------------------------------------- inference
    def label_for(self, probability: float, threshold: float | None = None) -> str:
        cut = self.threshold if threshold is None else threshold
        return self.positive_label if probability >= cut else self.card.negative_label

    def predict(self, batch: np.ndarray, check: bool = True) -> np.ndarray:
        """Probabilities of the positive label for a batch of uint8 cells.

        ``check``: raise ModelOutputError when any answer is not a probability (NaN, or outside
        0..1: a broken or foreign model); False leaves that to the caller (``not_probabilities``).

        ``batch`` is (N, size, size) or (N, size, size, channels) uint8, as made by
        edge.classify.preprocess. Returns float32 (N,). One interpreter call per batch of up to
        MAX_BATCH cells when the model has a dynamic batch dimension; one call per cell
        otherwise (``self.batching`` says which).
        """
        batch = np.asarray(batch)
        spec = self.card.input
        if batch.ndim == 3:
            batch = batch[..., np.newaxis]
        if batch.ndim != 4 or batch.shape[1:3] != (spec.size, spec.size) or batch.shape[3] not in (1, spec.channels):
            expected = f"[N, {spec.size}, {spec.size}, {spec.channels}]"
            raise ValueError(f"batch shape {list(batch.shape)} does not fit the model input {expected}")
        if batch.dtype != np.uint8:
            raise ValueError(f"batch dtype is {batch.dtype}; expected uint8 pixels from edge.classify.preprocess")
        if batch.shape[3] != spec.channels:
            batch = np.repeat(batch, spec.channels, axis=3)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        step = MAX_BATCH if self.batching == "resize" else 1
        outputs = [self._invoke(self._input_lut[batch[i : i + step]]) for i in range(0, len(batch), step)]
        probabilities = self._positive_probability(np.concatenate(outputs))
        bad = not_probabilities(probabilities)
        if check and bad.any():
            raise ModelOutputError(
                f"{self.path}: {int(bad.sum())} of {len(bad)} answers are not a probability "
                f"(e.g. {probabilities[bad][0]!r})"
            )
        return probabilities

    def _invoke(self, tensor: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter
        if len(tensor) != self._batch_size:
            interpreter.resize_tensor_input(self._input["index"], list(tensor.shape))
            interpreter.allocate_tensors()
            self._batch_size = len(tensor)
        interpreter.set_tensor(self._input["index"], tensor)
        interpreter.invoke()
        raw = interpreter.get_tensor(self._output["index"])
        if raw.dtype == np.float32:
            return raw.astype(np.float32)
        scale, zero_point = self._output["quantization"]
        return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def _positive_probability(self, outputs: np.ndarray) -> np.ndarray:
        positive_index = self.labels.index(self.positive_label)
        if outputs.shape[1] == 2:
            return outputs[:, positive_index].astype(np.float32)
        probability = outputs[:, 0]
        return (probability if positive_index == 1 else 1.0 - probability).astype(np.float32)
