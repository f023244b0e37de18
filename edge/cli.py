"""The `metascope` command.

Exit status: 0 success; 1 some input failed (each named on stderr, the rest processed), or
a command could not do its job (no database, a failed doctor check); 2 usage or set-up error
(bad arguments, a bad config key, no usable model). `metascope run` adds 3 (the camera failed
repeatedly) and 4 (frames kept failing), so systemd restarts it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edge import __version__
from edge.card import ModelError
from edge.commands import doctor as doctor_command
from edge.commands import export as export_command
from edge.commands import run as run_command
from edge.commands import status as status_command
from edge.commands.common import CommandError
from edge.model import Classifier
from edge.paths import default_model_path, find_model
from edge.preprocess import ImageError, read_grayscale, single_cell_input

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
CLASSIFY_CHUNK = 32  # images decoded per predict call: one interpreter call, bounded memory


class UsageError(Exception):
    """Bad arguments or set-up: printed as one line, exit status 2."""


def probability_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def load_classifier(model: str | None, threads: int = 0, interpreter: str | None = None) -> Classifier:
    """``model``: a path, a bare NAME of an installed model, or None for the default model;
    ``threads`` 0: every core."""
    path = find_model(model) if model else default_model_path()
    if path is None:
        raise UsageError("no model found: pass --model PATH or set METASCOPE_MODEL")
    try:
        return Classifier.load(path, num_threads=threads, interpreter=interpreter)
    except ModelError as exc:
        raise UsageError(str(exc)) from exc


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="NAME.tflite with NAME.json beside it (default: the shipped model)")
    parser.add_argument(
        "--threads", type=non_negative_int, default=0, help="interpreter threads (default 0: every core)"
    )
    parser.add_argument(
        "--interpreter",
        choices=["ai_edge_litert", "tflite_runtime", "tensorflow.lite"],
        help="use only this interpreter (default: the first installed, in this order)",
    )


# ------------------------------------------------------------------ classify
def iter_image_paths(inputs: Sequence[str]) -> Iterator[Path]:
    """Files as given; directories recursively, sorted, skipping hidden entries."""
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                relative = found.relative_to(path).parts
                if found.is_file() and not any(part.startswith(".") for part in relative):
                    yield found
        else:
            yield path


def classify(args: argparse.Namespace) -> int:
    classifier = load_classifier(args.model, args.threads, args.interpreter)
    threshold = classifier.threshold if args.threshold is None else args.threshold
    spec = classifier.input_spec
    counts: Counter[str] = Counter()
    failed = 0
    if not args.json:
        print("file\tlabel\tprobability")

    def flush(paths: list[Path], cells: list[np.ndarray]) -> None:
        if not paths:
            return
        for path, probability in zip(paths, classifier.predict(np.stack(cells)), strict=True):
            label = classifier.label_for(float(probability), threshold)
            counts[label] += 1
            if args.json:
                print(json.dumps({"file": str(path), "label": label, "probability": round(float(probability), 6)}))
            else:
                print(f"{path}\t{label}\t{probability:.4f}")
        sys.stdout.flush()

    paths: list[Path] = []
    cells: list[np.ndarray] = []
    for path in iter_image_paths(args.inputs):
        try:
            cells.append(single_cell_input(read_grayscale(path), spec))
        except ImageError as exc:
            failed += 1
            print(f"metascope classify: skipped {exc}", file=sys.stderr)
            continue
        paths.append(path)
        if len(paths) == CLASSIFY_CHUNK:
            flush(paths, cells)
            paths, cells = [], []
    flush(paths, cells)

    per_label = ", ".join(f"{label} {counts[label]}" for label in classifier.labels)
    print(
        f"metascope classify: {sum(counts.values())} classified ({per_label}; threshold {threshold:g}), "
        f"{failed} failed; model {classifier.card.name} via {classifier.interpreter_name}",
        file=sys.stderr,
    )
    return EXIT_SOME_FAILED if failed else EXIT_OK


# --------------------------------------------------------------------- bench
def bench(args: argparse.Namespace) -> int:
    from edge.bench import bench_model_threads, bench_pipeline, write_json

    if args.what == "model":
        result = bench_model_threads(
            lambda threads: load_classifier(args.model, threads, args.interpreter),
            args.threads,
            calls=args.calls,
            batch=args.batch,
        )
    else:
        classifier = load_classifier(args.model, args.threads, args.interpreter)
        result = bench_pipeline(
            classifier, cells=args.cells, frames=args.frames, width=args.width, height=args.height, rss_every=500
        )
    print(write_json(result, args.out))
    return EXIT_OK


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metascope", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"metascope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    classify_parser = commands.add_parser(
        "classify",
        help="classify single-cell images (one cell per image)",
        description="Classify single-cell images: one row per image, a summary on stderr.",
    )
    classify_parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders (recursive)")
    add_model_args(classify_parser)
    classify_parser.add_argument("--json", action="store_true", help="JSON lines instead of tab-separated rows")
    classify_parser.add_argument(
        "--threshold",
        type=probability_arg,
        help="probability at or above which a cell is positive (default: the card's)",
    )
    classify_parser.set_defaults(handler=classify)

    bench_parser = commands.add_parser("bench", help="benchmarks, JSON out (medians and p99 in ms)")
    bench_parser.add_argument(
        "what",
        choices=["model", "pipeline"],
        help="model: classifier latency per cell and per batch; pipeline: the service loop end to end "
        "on synthetic frames (per-stage latency, resident memory)",
    )
    add_model_args(bench_parser)
    bench_parser.add_argument("--calls", type=positive_int, default=1000, help="model: single-cell calls to time")
    bench_parser.add_argument("--batch", type=positive_int, default=32, help="model: cells per batched call")
    bench_parser.add_argument("--cells", type=positive_int, default=20, help="pipeline: cells per frame")
    bench_parser.add_argument("--frames", type=positive_int, default=2000, help="pipeline: frames to time")
    bench_parser.add_argument("--width", type=positive_int, default=640, help="pipeline: frame width")
    bench_parser.add_argument("--height", type=positive_int, default=480, help="pipeline: frame height")
    bench_parser.add_argument("--out", help="also write the JSON here")
    bench_parser.set_defaults(handler=bench)

    for command in (run_command, status_command, export_command, doctor_command):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"metascope {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"metascope {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except BrokenPipeError:
        # `metascope classify ... | head` closed the pipe; not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
