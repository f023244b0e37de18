"""What a model's tensors must be to serve its card, checked once at load: one input of the
card's size and channels (int8, uint8 or float32, and the dtype the card records, if any), one
binary output ([N, 1] sigmoid or [N, 2] softmax); whether a batch really runs in one call; and
the table that maps a uint8 pixel into the input tensor's dtype, scale and zero point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.classify.card import ModelCard, ModelCardError, ModelError, card_path_for

_INPUT_DTYPES = {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.float32)}


class ModelMismatchError(ModelError):
    """The model's tensors disagree with its card, or it is not a binary classifier."""


@dataclass(frozen=True)
class Tensors:
    """The checked tensors of an allocated interpreter."""

    input: dict[str, Any]  # the interpreter's input details
    output: dict[str, Any]  # and its output details
    batching: str  # "resize": up to a batch per call (dynamic batch dimension); "loop": one cell per call
    input_lut: np.ndarray  # pixel value (0..255) -> value in the input tensor's dtype


def check_tensors(path: Path, card: ModelCard, interpreter: Any) -> Tensors:
    """The tensors of ``interpreter`` (the model at ``path``), or ModelMismatchError saying how
    they disagree with ``card``."""
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    where = str(path)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelMismatchError(
            f"{where}: not a binary classifier: expected 1 input and 1 output tensor, "
            f"found {len(inputs)} and {len(outputs)}"
        )
    tensor_in, tensor_out = inputs[0], outputs[0]
    spec = card.input
    shape = tuple(int(d) for d in tensor_in["shape"])
    expected = (spec.size, spec.size, spec.channels)
    if len(shape) != 4 or shape[1:] != expected:
        raise ModelMismatchError(
            f"{where}: input tensor shape {list(shape)} disagrees with the card's input "
            f"(size {spec.size}, channels {spec.channels}: expected [N, {spec.size}, {spec.size}, {spec.channels}])"
        )
    dtype = np.dtype(tensor_in["dtype"])
    if dtype not in _INPUT_DTYPES:
        raise ModelMismatchError(f"{where}: unsupported input dtype {dtype}; expected int8, uint8 or float32")
    declared = declared_input_dtype(path, card)
    if declared is not None and declared != dtype:
        raise ModelMismatchError(f"{where}: input dtype is {dtype} but the card says {declared}")
    out_shape = tuple(int(d) for d in tensor_out["shape"])
    if len(out_shape) != 2 or out_shape[1] not in (1, 2):
        raise ModelMismatchError(
            f"{where}: not a binary classifier: output shape {list(out_shape)}, expected [N, 1] "
            "(sigmoid) or [N, 2] (softmax)"
        )
    signature = tensor_in.get("shape_signature")
    batching = "resize" if signature is not None and int(signature[0]) == -1 else "loop"
    if batching == "resize" and not takes_batches(interpreter, tensor_in, shape):
        batching = "loop"
    return Tensors(tensor_in, tensor_out, batching, input_lut(path, tensor_in))


def takes_batches(interpreter: Any, tensor_in: dict[str, Any], shape: tuple[int, ...]) -> bool:
    """Whether a batch of two really runs: some models claim any batch size but reshape to
    one cell inside, and would fail at the first frame with two cells, not at load."""
    index = tensor_in["index"]
    try:
        interpreter.resize_tensor_input(index, [2, *shape[1:]])
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, np.zeros([2, *shape[1:]], dtype=tensor_in["dtype"]))
        interpreter.invoke()
        return True
    except (RuntimeError, ValueError):
        return False
    finally:
        interpreter.resize_tensor_input(index, list(shape))
        interpreter.allocate_tensors()


def declared_input_dtype(path: Path, card: ModelCard) -> np.dtype | None:
    """The card's quantization.input.dtype, if it records one (a garbled record is a card error)."""
    record = card.extra.get("quantization")
    if record is None:
        return None
    problem = ModelCardError(
        f'{card_path_for(path)}: \'quantization\' must be like {{"input": {{"dtype": "int8", ...}}}}, got {record!r}'
    )
    if not isinstance(record, dict) or not isinstance(record.get("input", {}), dict):
        raise problem
    declared = record.get("input", {}).get("dtype")
    try:
        return None if declared is None else np.dtype(declared)
    except TypeError:
        raise problem from None


def input_lut(path: Path, tensor_in: dict[str, Any]) -> np.ndarray:
    """Pixel value (0..255) -> value in the input tensor's dtype, scale and zero point."""
    dtype = np.dtype(tensor_in["dtype"])
    pixels = np.arange(256, dtype=np.float64)
    if dtype == np.float32:
        return pixels.astype(np.float32)
    scale, zero_point = tensor_in["quantization"]
    if scale == 0:
        raise ModelMismatchError(f"{path}: {dtype} input tensor has no quantisation scale")
    info = np.iinfo(dtype)
    return np.clip(np.rint(pixels / scale + zero_point), info.min, info.max).astype(dtype)
