"""Keras model -> full-integer int8 TFLite (what the Pi runs) and a float TFLite (for comparison).

Dense layers are quantised per-tensor, not per-channel: tflite-runtime 2.14 on aarch64 reads
a null pointer in gemmlowp on a per-channel int8 FULLY_CONNECTED layer with fewer than 4
outputs, which is exactly a binary head. ``export_int8`` checks the result and refuses to
write a model whose dense weights came out per-channel anyway.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
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
# Logit grid points searched each way for the first one called positive (logit_grid_shift).
GRID_SEARCH = 64
# The int8 logit's mean error is measured on calibration cells this close to the boundary (p
# 0.27-0.73), where it decides calls; it needs at least this many of them.
NEAR_BOUNDARY_LOGIT = 1.0
MIN_NEAR_CELLS = 20
LOGIT_BATCH = 64


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


def convert_int8(model: Any, representative_images: np.ndarray, seed: int = 0, threshold: float | None = 0.5) -> bytes:
    """Full-integer int8 conversion with int8 input and output.

    ``representative_images`` are uint8 (N, H, W, C) model inputs from the training split.
    ``threshold``: the card's decision threshold, which the int8 logit grid is aligned to
    (``logit_grid_shift``); None leaves the grid where calibration put it.
    """
    if representative_images.ndim == 3:
        representative_images = representative_images[..., np.newaxis]
    # The int8 model's systematic share of weight rounding, taken off BatchNorm offsets first.
    corrected = bias_corrected(model, representative_images[..., 0], cells=REPRESENTATIVE_SAMPLES, seed=seed)
    content = _converted(corrected, representative_images, seed)
    head = _logit_bias_layer(corrected)
    if threshold is None or head is None:
        return content
    step = logit_step(content)
    # The boundary put on the grid's rounding edge, after the int8 logit's own mean error there is taken off.
    shift = logit_grid_shift(step, threshold) - int8_logit_bias(content, model, representative_images, seed)
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + np.float32(shift)])
    aligned = _converted(corrected, representative_images, seed)
    # The shift moves the logits' calibrated range, not its width, so the grid stays the same;
    # were it ever to move (a range not holding zero), the aligned boundary would be off: the
    # model as calibrated is kept.
    return aligned if math.isclose(logit_step(aligned), step, rel_tol=1e-3) else content


def int8_logit_bias(content: bytes, model: Any, representative_images: np.ndarray, seed: int) -> float:
    """How far the int8 model's logit sits from the float model's, on average, over the
    calibration cells near the boundary (|logit| < NEAR_BOUNDARY_LOGIT): the error that rounding
    every layer adds up to there, which the weights' bias correction does not see. 0 with fewer
    than MIN_NEAR_CELLS such cells."""
    if representative_images.ndim == 3:
        representative_images = representative_images[..., np.newaxis]
    order = np.random.default_rng(seed).permutation(len(representative_images))[:REPRESENTATIVE_SAMPLES]
    images = representative_images[np.sort(order)]
    probabilities = np.clip(
        model.predict(images.astype(np.float32), verbose=0).reshape(-1).astype(np.float64), 1e-7, 1 - 1e-7
    )
    float_logits = np.log(probabilities / (1.0 - probabilities))
    near = np.abs(float_logits) < NEAR_BOUNDARY_LOGIT
    if near.sum() < MIN_NEAR_CELLS:
        return 0.0
    return float(np.mean(int8_logits(content, images[near]) - float_logits[near]))


def int8_logits(content: bytes, images: np.ndarray) -> np.ndarray:
    """The int8 model's logits (the tensor its sigmoid reads, dequantized) for uint8 model inputs
    (N, size, size[, 1]), LOGIT_BATCH at a time: every intermediate tensor is kept to read it."""
    with warnings.catch_warnings():  # keeping every tensor "is intended for debugging": bounded here
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        interpreter = quiet_interpreter(content, preserve_all_tensors=True)
    logit_index = _logit_tensor(interpreter)
    logits = []
    for start in range(0, len(images), LOGIT_BATCH):
        _run(interpreter, images[start : start + LOGIT_BATCH])
        logits.append(interpreter.get_tensor(logit_index).reshape(-1).astype(np.float64))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    scale, zero_point = tensors[logit_index]["quantization"]
    return (np.concatenate(logits) - zero_point) * scale


def logit_grid_shift(step: float, threshold: float) -> float:
    """What to add to the int8 model's logit so that its calls change exactly where the float
    model's do.

    The int8 logit is a multiple of ``step`` (zero is always on the grid), and the sigmoid after it
    maps each grid point to a multiple of 1/256. With threshold 0.5 the grid point 0 gives exactly
    0.5: every logit within half a step below zero rounds up to it and is called positive, a
    boundary half a step (about 0.03) off the float one. Shifting the logit by -step/2 (in
    general, to half a step below the first grid point called positive) puts it back. The price:
    a logit reads up to one step low rather than half a step either way (at p = 0.5, 0.0125 at
    most instead of 0.006; 0.006 on average, low). Five paired final fits of the default recipe
    (docs/experiments/int8_alignment): 74 calls changed in all instead of 87; the int8 model's
    own error near the boundary (standard deviation 0.08 in logit, from the backbone) is what
    is left. 0 where no grid point reaches the threshold or the output cannot show it."""
    if not 0.0 < threshold < 1.0 or step <= 0:
        return 0.0
    boundary = math.log(threshold / (1.0 - threshold))

    def called_positive(k: int) -> bool:  # TFLite's int8 LOGISTIC: a table of sigmoids, rounded to 1/256
        return math.floor(256.0 / (1.0 + math.exp(-k * step)) + 0.5) / 256.0 >= threshold

    k = math.floor(boundary / step)
    for _ in range(GRID_SEARCH):  # up to a grid point called positive
        if called_positive(k):
            break
        k += 1
    else:
        return 0.0
    for _ in range(GRID_SEARCH):  # down to the first one
        if not called_positive(k - 1):
            return (k - 0.5) * step - boundary
        k -= 1
    return 0.0  # a grid finer than the output's 1/256 around the threshold: no single boundary


def logit_step(content: bytes) -> float:
    """The int8 model's logit step: the scale of the tensor its sigmoid reads."""
    interpreter = quiet_interpreter(content)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    return float(tensors[_logit_tensor(interpreter)]["quantization"][0])


def _logit_tensor(interpreter: Any) -> int:
    """The index of the tensor the model's one sigmoid reads (its logit)."""
    logistic = [op for op in interpreter._get_ops_details() if op["op_name"] == "LOGISTIC"]
    if len(logistic) != 1:
        raise ExportError(f"expected one sigmoid in the int8 model, found {len(logistic)}")
    return int(logistic[0]["inputs"][0])


def _logit_bias_layer(model: Any) -> Any:
    """The Dense layer whose bias moves the logit the model's sigmoid reads: its sigmoid head,
    or the first of the linear heads summed before a sigmoid (the compact CNN's avg+max);
    None for any other ending."""
    last = model.layers[-1]
    if not _is_sigmoid(getattr(last, "activation", None)):
        return None
    if isinstance(last, keras.layers.Dense):
        return last if last.use_bias else None
    summed = last.input._keras_history.operation
    if not isinstance(last, keras.layers.Activation) or not isinstance(summed, keras.layers.Add):
        return None
    heads = [tensor._keras_history.operation for tensor in summed.input]
    linear = [h for h in heads if isinstance(h, keras.layers.Dense) and h.use_bias and not _is_sigmoid(h.activation)]
    return linear[0] if linear else None


def _is_sigmoid(activation: Any) -> bool:
    return getattr(activation, "__name__", "") == "sigmoid"


def _converted(model: Any, representative_images: np.ndarray, seed: int) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
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


def quiet_interpreter(content: bytes, preserve_all_tensors: bool = False) -> Any:
    """An interpreter for ``content``, not allocated: allocating applies the XNNPACK delegate,
    which rewrites the op list dense_weight_quantization reads (and prints a notice).
    ``preserve_all_tensors``: intermediate tensors stay readable after invoke."""
    with native_noise_filtered():
        interpreter_class = find_interpreter().interpreter_class
        if preserve_all_tensors:
            return interpreter_class(model_content=content, experimental_preserve_all_tensors=True)
        return interpreter_class(model_content=content)


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
    _run(interpreter, images)
    output_detail = interpreter.get_output_details()[0]
    raw = interpreter.get_tensor(output_detail["index"]).reshape(-1).astype(np.float32)
    out_scale, out_zero = output_detail["quantization"]
    return (raw - out_zero) * out_scale


def _run(interpreter: Any, images: np.ndarray) -> None:
    """One invocation on the whole batch of uint8 model inputs, quantised as the input asks."""
    input_detail = interpreter.get_input_details()[0]
    batch = images[..., np.newaxis] if images.ndim == 3 else images
    interpreter.resize_tensor_input(input_detail["index"], list(batch.shape))
    with native_noise_filtered():  # the process's first allocation announces XNNPACK
        interpreter.allocate_tensors()
    scale, zero_point = input_detail["quantization"]
    quantised = np.clip(np.rint(batch.astype(np.float64) / scale + zero_point), -128, 127).astype(np.int8)
    interpreter.set_tensor(input_detail["index"], quantised)
    interpreter.invoke()


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
