"""What a model costs per cell: counted (multiply-accumulates), measured here through the
Pi's own Classifier, and estimated for a Raspberry Pi 4 from public figures (no Pi has been
measured by this project yet).

The estimate scales one public figure by multiply-accumulates: EfficientNet-Lite0, int8, 224
px, about 50 ms an image on a Pi 4 CPU (in line with XNNPACK's MobileNetV2 FP32, 300 M MACs,
47 ms multi-threaded on a Pi 4). Small models do worse than MACs suggest (fixed per-call
overhead), so treat a small estimate as a floor, and run `metascope bench` on the Pi itself.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from keras import layers

from edge.classify.classifier import Classifier
from edge.commands.benchmarks import machine, summarise_ms, time_calls

PI4_REFERENCE_MS = 50.0
# count_macs(build_lite_imagenet("lite0", 224)): the reference network as this project counts MACs
# (tests/train/test_efficientnet_lite.py checks it), so the ratio compares like with like.
PI4_REFERENCE_MACS = 385_187_552
PI4_BASIS = (
    "EfficientNet-Lite0 int8 at 224 px is about 50 ms per image on a Raspberry Pi 4 CPU (public figures); "
    "scaled by this model's multiply-accumulates"
)
CALLS = 200


def count_macs(model: Any) -> int:
    """Multiply-accumulates per cell of the conv and dense layers (what dominates on a CPU)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):  # one kernel per channel
            _, height, width, channels = layer.output.shape
            kh, kw = layer.kernel_size
            total += height * width * channels * kh * kw
        elif isinstance(layer, layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += height * width * out_channels * in_channels * kh * kw
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def pi4_estimate_ms(macs_per_cell: int) -> float:
    return round(PI4_REFERENCE_MS * macs_per_cell / PI4_REFERENCE_MACS, 2)


def measured_speed(classifier: Classifier, macs_per_cell: int, calls: int = CALLS) -> dict[str, Any]:
    """One cell per call at 1 thread and at every core of this machine (median and p99), and
    the Pi 4 estimate."""
    spec = classifier.input_spec
    cell = np.random.default_rng(0).integers(0, 256, (1, spec.size, spec.size), dtype=np.uint8)
    cores = os.cpu_count() or 1
    measured = {}
    for threads in sorted({1, cores}):
        timed = Classifier.load(classifier.path, num_threads=threads, interpreter=classifier.interpreter_name)
        summary = summarise_ms(time_calls(lambda timed=timed: timed.predict(cell), calls))
        measured[str(threads)] = {"p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"]}
    return {
        "ms_per_cell": measured,
        "calls": calls,
        "interpreter": f"{classifier.interpreter_name} {classifier.interpreter_version}",
        "machine": machine(),
        "pi4_estimate_ms_per_cell": pi4_estimate_ms(macs_per_cell),
        "pi4_estimate_basis": PI4_BASIS,
    }
