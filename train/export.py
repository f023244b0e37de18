"""Keras model -> full-integer int8 TFLite (what the Pi runs) and a float TFLite (for comparison).

Dense layers are quantised per-tensor, not per-channel: tflite-runtime 2.14 on aarch64 reads
a null pointer in gemmlowp on a per-channel int8 FULLY_CONNECTED layer with fewer than 4
outputs, which is exactly a binary head. ``export_int8`` checks the result and refuses to
write a model whose dense weights came out per-channel anyway.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from edge.classify.card import ModelCard, card_path_for, sha256_file
from edge.classify.interpreter import find_interpreter
from edge.classify.native_noise import native_noise_filtered
from edge.errors import ExitCode, MetascopeError
from train.int8_aware import bias_corrected
from train.recipe import MIN_INT8_AGREEMENT

# Calibration cells (ranges and bias correction): every training cell up to this many. With all
# 1306 of the shared data instead of 300, the Lite0 model's int8 calls agreed on 99.2 % instead
# of 98.8-99.1 % (depending on the draw), the same for every draw.
REPRESENTATIVE_SAMPLES = 2000


class ExportError(MetascopeError):
    """The converted model is not one the Pi can be trusted to run (nothing is written)."""

    exit_code = ExitCode.EXPORT_REFUSED

    def __init__(self, problem: str):
        super().__init__(f"export refused: {problem}")


def _representative(images: np.ndarray, limit: int, seed: int) -> Iterator[list[np.ndarray]]:
    order = np.random.default_rng(seed).permutation(len(images))[:limit]
    for position, index in enumerate(order):
        sample = images[index : index + 1].astype(np.float32)
        if position == 0:
            # The input's int8 range is the calibration data's min and max: one white and one
            # black pixel make it exactly 0..255 (scale 1, zero point -128), so no pixel of a
            # brighter cell than any calibration cell is ever clipped on the Pi.
            sample[0, 0, 0], sample[0, -1, -1] = 255.0, 0.0
        yield [sample]


def convert_int8(model: Any, representative_images: np.ndarray, seed: int = 0) -> bytes:
    """Full-integer int8 conversion with int8 input and output.

    ``representative_images`` are uint8 (N, H, W, C) model inputs from the training split.
    """
    if representative_images.ndim == 3:
        representative_images = representative_images[..., np.newaxis]
    # The int8 model's systematic share of weight rounding, taken off BatchNorm offsets first.
    corrected = bias_corrected(model, representative_images[..., 0], cells=REPRESENTATIVE_SAMPLES, seed=seed)
    converter = tf.lite.TFLiteConverter.from_keras_model(corrected)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: _representative(representative_images, REPRESENTATIVE_SAMPLES, seed)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    # "Saved artifact at /tmp/..." (stdout) and the converter's settings (fd 2) are noise; so is
    # its warning that inputs carry no statistics: the representative dataset provides them.
    with contextlib.redirect_stdout(io.StringIO()), native_noise_filtered(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        content = converter.convert()
    per_channel = [op for op in dense_weight_quantization(content) if op["scales"] > 1]
    if per_channel:
        raise ExportError(
            f"dense layer weights came out per-channel ({per_channel}); tflite-runtime 2.14 "
            "crashes on those, so the model was not written"
        )
    return content


def quiet_interpreter(content: bytes) -> Any:
    """An interpreter for ``content``, not allocated: allocating applies the XNNPACK delegate,
    which rewrites the op list dense_weight_quantization reads (and prints a notice)."""
    with native_noise_filtered():
        return find_interpreter().interpreter_class(model_content=content)


def convert_float(model: Any) -> bytes:
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def dense_weight_quantization(content: bytes) -> list[dict[str, Any]]:
    """For each FULLY_CONNECTED op: its weight tensor's name, dtype and number of scales
    (1 = per-tensor, >1 = per-channel)."""
    interpreter = quiet_interpreter(content)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():  # the only API that maps ops to their tensors
        if op["op_name"] != "FULLY_CONNECTED":
            continue
        weights = tensors[int(op["inputs"][1])]
        scales = weights["quantization_parameters"]["scales"]
        found.append({"tensor": weights["name"], "dtype": str(np.dtype(weights["dtype"])), "scales": len(scales)})
    return found


def tensor_quantization(content: bytes) -> dict[str, dict[str, Any]]:
    """dtype, scale and zero point of the model's input and output, for the card."""
    interpreter = quiet_interpreter(content)

    def describe(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        return {"dtype": str(np.dtype(detail["dtype"])), "scale": float(scale), "zero_point": int(zero_point)}

    return {
        "input": describe(interpreter.get_input_details()[0]),
        "output": describe(interpreter.get_output_details()[0]),
    }


def write_model(path: str | os.PathLike[str], content: bytes, card: ModelCard) -> Path:
    """Write NAME.tflite and NAME.json atomically; the card gets the file's sha256."""
    path = Path(path)
    if path.suffix != ".tflite":
        path = path.with_name(path.name + ".tflite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    extra = {**card.extra, "quantization": tensor_quantization(content)}
    replace(card, sha256=sha256_file(path), extra=extra).write(card_path_for(path))
    return path


def int8_probabilities(content: bytes, images: np.ndarray) -> np.ndarray:
    """P(positive) from an int8 .tflite (bytes) for uint8 model inputs (N, size, size)."""
    interpreter = quiet_interpreter(content)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    batch = images[..., np.newaxis] if images.ndim == 3 else images
    interpreter.resize_tensor_input(input_detail["index"], list(batch.shape))
    with native_noise_filtered():  # the process's first allocation announces XNNPACK
        interpreter.allocate_tensors()
    scale, zero_point = input_detail["quantization"]
    quantised = np.clip(np.rint(batch.astype(np.float64) / scale + zero_point), -128, 127).astype(np.int8)
    interpreter.set_tensor(input_detail["index"], quantised)
    interpreter.invoke()
    raw = interpreter.get_tensor(output_detail["index"]).reshape(-1).astype(np.float32)
    out_scale, out_zero = output_detail["quantization"]
    return (raw - out_zero) * out_scale


def fidelity(
    float_probabilities: np.ndarray,
    int8_probs: np.ndarray,
    threshold: float,
    minimum: float = MIN_INT8_AGREEMENT,
    cells: str = "held-out cells",
) -> dict[str, Any]:
    """Label agreement and probability differences between the float and int8 models, on
    ``cells`` (what they are, for the message).

    Raises ExportError when agreement is below ``minimum``: such a model must not ship.
    """
    float_probabilities = np.asarray(float_probabilities, dtype=np.float64)
    int8_probs = np.asarray(int8_probs, dtype=np.float64)
    if len(float_probabilities) == 0:
        raise ExportError("no cells to check int8 fidelity on")
    agree = (float_probabilities >= threshold) == (int8_probs >= threshold)
    difference = np.abs(float_probabilities - int8_probs)
    result = {
        "cells": len(agree),
        "label_agreement": float(agree.mean()),
        "mean_abs_probability_difference": float(difference.mean()),
        "max_abs_probability_difference": float(difference.max()),
        "minimum_agreement": minimum,
    }
    if result["label_agreement"] < minimum:
        raise ExportError(
            f"int8 model agrees with the float model on only {result['label_agreement']:.2%} of "
            f"{len(agree)} {cells} (minimum {minimum:.0%}; mean |dp| "
            f"{result['mean_abs_probability_difference']:.3f}); the model was not written"
        )
    return result
