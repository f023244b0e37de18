"""The `metascope-train` command: `fit` a model from a labelled folder, `evaluate` an exported one,
`report` on pulled results and `sort-crops` them into a labelled folder.

Each command lives in train/commands/, as edge's do. Exit statuses (edge/errors.py, README):
0 done; 2 bad arguments or unusable data (the message says what is wrong); 3 the int8 export
was refused by the fidelity check; 1 a crash (a bug: its traceback is kept).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edge import __version__
from edge.errors import ExitCode, MetascopeError
from train import progress
from train.commands import evaluate, fit, report, sort_crops

COMMANDS = (fit, evaluate, report, sort_crops)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metascope-train", description="Train and evaluate metascope's cell classifier (int8 TFLite)."
    )
    parser.add_argument("--version", action="version", version=f"metascope-train {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # a bare command asks what it can do: not an error
        return ExitCode.OK
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)  # the card records the command line
    progress.set_from(args)
    try:
        return int(args.handler(args))
    except MetascopeError as exc:
        print(f"metascope-train: {exc}", file=sys.stderr)
        return int(exc.exit_code)
