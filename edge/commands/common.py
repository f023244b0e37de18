"""What the `metascope` commands share: argument types, --config/--state-dir and loading the
config, --model/--threads/--interpreter and loading the classifier."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge.classify.interpreter import INTERPRETER_NAMES, MAX_THREADS
from edge.config import Config, load_config
from edge.errors import CommandError, UsageError
from edge.paths import default_model_path, find_model

if TYPE_CHECKING:  # edge.classify.classifier imports numpy; status and export must not
    from edge.classify.classifier import Classifier

__all__ = ["CommandError", "UsageError"]


def _whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"{text} must be at most {maximum}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def thread_count(text: str) -> int:
    """Interpreter threads: 0 (every core) to MAX_THREADS."""
    return _whole_number(text, 0, MAX_THREADS)


def folder_arg(text: str) -> Path:
    """An existing folder, checked while parsing: before a command loads anything heavy."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a folder")
    return path


def probability_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config (default: /etc/metascope/metascope.toml if present, else built-in defaults)",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="override the config's state_dir")


def config_from_args(args: argparse.Namespace) -> Config:
    """The config the arguments name (a bad one is a ConfigError: a usage error, exit 2)."""
    config = load_config(args.config)
    if getattr(args, "state_dir", None):
        config = replace(config, state_dir=args.state_dir)
    return config


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="NAME.tflite with NAME.json beside it, or an installed model's NAME "
                        "(default: the shipped model)")  # fmt: skip
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=0,
        help=f"interpreter threads, 0 to {MAX_THREADS} (default 0: every core)",
    )
    parser.add_argument(
        "--interpreter",
        choices=INTERPRETER_NAMES,
        help="use only this interpreter (default: the first installed, in this order)",
    )


def load_classifier(model: str | None, threads: int = 0, interpreter: str | None = None) -> Classifier:
    """``model``: a path, a bare NAME of an installed model, or None for the default model;
    ``threads`` 0: every core. An unusable model is a ModelError (a usage error, exit 2)."""
    from edge.classify.classifier import Classifier

    path = find_model(model) if model else default_model_path()
    if path is None:
        raise UsageError("no model found: pass --model PATH or set METASCOPE_MODEL")
    return Classifier.load(path, num_threads=threads, interpreter=interpreter)
