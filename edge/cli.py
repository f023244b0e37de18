"""The `metascope` command: classify, detect, bench, run, status, export, doctor, live.

Each command lives in edge/commands/ and registers its own arguments; this module only puts
them together. Exit statuses: edge/errors.py (ExitCode) and the table in README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from edge import __version__
from edge.commands import bench, classify, detect, doctor, export, live, run, status
from edge.errors import ExitCode, MetascopeError

COMMANDS = (classify, detect, bench, run, status, export, doctor, live)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metascope", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"metascope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # a bare `metascope` asks what it can do: not an error
        return ExitCode.OK
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except MetascopeError as exc:
        print(f"metascope {args.command}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except BrokenPipeError:
        # `metascope classify ... | head` closed the pipe; not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
