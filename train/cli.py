"""The `metascope-train` command: `fit` a model from a labelled folder, `evaluate` an exported one.

Each command lives in train/commands/, as edge's do. Exit statuses (edge/errors.py, README):
0 done; 2 bad arguments or unusable data (the message says what is wrong); 3 the int8 export
was refused by the fidelity check; 1 a crash (a bug: its traceback is kept).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edge.errors import MetascopeError
from train.commands import evaluate, fit

COMMANDS = (fit, evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metascope-train", description="Train and evaluate metascope's cell classifier (int8 TFLite)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)  # the card records the command line
    try:
        return int(args.handler(args))
    except MetascopeError as exc:
        print(f"metascope-train: {exc}", file=sys.stderr)
        return int(exc.exit_code)
