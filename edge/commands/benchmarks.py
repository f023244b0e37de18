"""Benchmarks: numbers that matter, measured here and on the Pi the same way.

`metascope bench model` times the classifier alone: single-cell calls and batches of 32, at
one interpreter thread and at every core (or at --threads N).
`metascope bench pipeline` runs the real service loop (Service, SQLite store included) on
synthetic frames and reports each stage and the end-to-end latency (frame ready -> its rows
written into the store's open batch; the batched commit, at most once a second, is inside the
store stage of the frame that triggers it), model calls (views) per frame and cells found, plus
resident memory over the run. ``field`` picks the frames: "new" (every frame a new synthetic
field: every cell is new in every frame, the most model calls tracking can meet), "still" (one
field held still: after the first frames only the views cells are still owed), "moving" (the
stage moves to a new field every ``move_every`` frames) or "composed" (real masked crops from the
folder ``crops``, ``cells`` to a field, each field held ``move_every`` frames: edge/capture/composed.py).
Results are JSON (stdout, and --out FILE) with medians and p99 in milliseconds, and the
machine they were measured on.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.classify.classifier import Classifier
from edge.commands.bench_samples import PipelineSamples

FIELDS = ("new", "still", "moving", "composed")


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


def thread_counts(threads: int) -> list[int]:
    """``threads`` 0: one thread and every core (what a service with the default config uses);
    else just that count."""
    return [threads] if threads else sorted({1, os.cpu_count() or 1})


def bench_model_threads(
    load: Callable[[int], Classifier], threads: int = 0, calls: int = 1000, batch: int = 32
) -> dict[str, Any]:
    """``bench_model`` at each of ``thread_counts(threads)``; ``load(n)`` opens the classifier
    with n interpreter threads."""
    runs = [bench_model(load(count), calls=calls, batch=batch) for count in thread_counts(threads)]
    return {"benchmark": "model", "model": runs[0]["model"], "runs": runs, "machine": machine()}


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
        "threads": classifier.threads,
        "single_cell": single,
        f"batch_{batch}": batched,
        "machine": machine(),
    }


def cpu_times() -> list[int]:
    """The machine's aggregate CPU time counters (Linux /proc/stat; empty elsewhere)."""
    try:
        return [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return []


def steal_percent(before: list[int], after: list[int]) -> float | None:
    """Share of CPU time the hypervisor gave to other guests between two cpu_times() readings:
    on a shared VM the p99 latency depends on it more than on the code."""
    if len(before) < 8 or len(after) < 8:
        return None
    spent = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(spent[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return round(100.0 * spent[7] / total, 2) if total > 0 else None


def write_json(result: dict[str, Any], out: str | os.PathLike[str] | None) -> str:
    text = json.dumps(result, indent=2)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


def bench_source(
    field: str, height: int, width: int, cells: int, seed: int, move_every: int, crops: str | None = None
) -> Any:
    """The frames of a ``field`` (one of FIELDS)."""
    from edge.capture.still_field import StillFieldSource
    from edge.capture.synthetic import SyntheticSource

    if field not in FIELDS:
        raise ValueError(f"field must be one of {', '.join(FIELDS)}, got {field!r}")
    if field == "composed":
        from edge.capture.composed import ComposedSource, ComposeSettings, load_crops

        settings = ComposeSettings(width=width, height=height, per_frame=cells, repeats=move_every, seed=seed)
        return ComposedSource(load_crops(crops or ""), settings, loop=True)
    if field == "new":
        return SyntheticSource(height=height, width=width, cells=cells, seed=seed, pool=32)
    moves = move_every if field == "moving" else 0
    return StillFieldSource(height=height, width=width, cells=cells, seed=seed, move_every=moves)


def bench_pipeline(
    classifier: Classifier,
    cells: int = 20,
    frames: int = 2000,
    width: int = 640,
    height: int = 480,
    warmup: int = 50,
    rss_every: int = 500,
    seed: int = 0,
    field: str = "new",
    move_every: int = 50,
    crops: str | None = None,
    live: Any = None,
) -> dict[str, Any]:
    """The service loop on ``frames`` synthetic frames (after ``warmup``), store in a temp dir;
    with ``live`` (a started edge.service.live.LiveView), every frame published to it as `run` does."""
    from edge.config import Config
    from edge.notify import Notifier
    from edge.service.live import run_status
    from edge.service.loop import Service

    source = bench_source(field, height, width, cells, seed, move_every, crops)
    samples = PipelineSamples(frames, warmup, rss_every)
    observe = samples.observe if live is None else lambda result: (samples.observe(result), live.publish(result))
    with tempfile.TemporaryDirectory(prefix="metascope-bench-") as state_dir:
        config = Config(state_dir=state_dir)
        config = config.with_overrides("snapshots", every_n_frames=0)
        config = config.with_overrides("service", summary_interval_s=86_400.0)
        service = Service(config, classifier, source, max_frames=frames + warmup, notifier=Notifier(address=""),
                          observer=observe)  # fmt: skip
        if live is not None:
            live.feed.status_source = run_status(service)  # as `metascope run` wires it
        started, cpu_before, process_before = time.perf_counter(), cpu_times(), os.times()
        exit_code = service.run()
        elapsed, cpu_after, process_after = time.perf_counter() - started, cpu_times(), os.times()
        database_mb = round(Path(config.database_path).stat().st_size / 1024 / 1024, 2)
    return {
        "benchmark": "pipeline",
        "model": classifier.describe(),
        "threads": classifier.threads,
        "frame": {"width": width, "height": height, "cells_requested": cells},
        "field": field,
        **({"move_every": move_every} if field in ("moving", "composed") else {}),
        **({"crops": str(crops)} if field == "composed" else {}),
        **samples.per_frame(),
        "cells_found": service.counters.cells,  # distinct cells (tracks), warm-up included
        "views": service.counters.views,
        "frames": frames,
        "warmup_frames": warmup,
        "frames_per_second": round((frames + warmup) / elapsed, 1),
        # this process's CPU time (every thread: the loop, the interpreter's, the live view's) a frame
        "process_cpu_ms_per_frame": round(1000.0 * _cpu_s(process_before, process_after) / (frames + warmup), 3),
        **samples.latency(),
        "exit_code": exit_code,
        "database_mb": database_mb,
        "machine": machine(),
        "cpu_steal_percent": steal_percent(cpu_before, cpu_after),
        **samples.memory(),
    }


def _cpu_s(before: os.times_result, after: os.times_result) -> float:
    return (after.user - before.user) + (after.system - before.system)
