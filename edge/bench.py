"""Benchmarks: numbers that matter, measured here and on the Pi the same way.

`metascope bench model` times the classifier alone: single-cell calls and batches of 32.
Results are JSON (stdout, and --out FILE) with medians and p99 in milliseconds, and the
machine they were measured on.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.model import Classifier


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "metascope": __version__,
    }


def summarise_ms(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def time_calls(call: Callable[[], object], repeats: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def bench_model(classifier: Classifier, calls: int = 1000, batch: int = 32, seed: int = 0) -> dict[str, Any]:
    """Latency of predict() for one cell and for a batch, on random uint8 cells."""
    spec = classifier.input_spec
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (batch, spec.size, spec.size), dtype=np.uint8)
    one = cells[:1]
    single = summarise_ms(time_calls(lambda: classifier.predict(one), calls))
    batched = summarise_ms(time_calls(lambda: classifier.predict(cells), max(calls // 10, 20)))
    batched["per_cell_p50_ms"] = round(batched["p50_ms"] / batch, 4)
    batched["per_cell_p99_ms"] = round(batched["p99_ms"] / batch, 4)
    return {
        "benchmark": "model",
        "model": classifier.describe(),
        "threads": 1,
        "single_cell": single,
        f"batch_{batch}": batched,
        "machine": machine(),
    }


def write_json(result: dict[str, Any], out: str | os.PathLike[str] | None) -> str:
    text = json.dumps(result, indent=2)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text
