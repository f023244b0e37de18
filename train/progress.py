"""Progress output of the training commands (a line per step, a bar while loading, a line per
epoch, all on stderr) and the one switch that turns it off: `--quiet`, set once per command by
train/cli.py. Warnings and errors are shown whatever the switch says."""

from __future__ import annotations

import argparse
import sys


class _Switch:
    shown = True


def show(shown: bool) -> None:
    _Switch.shown = shown


def shown() -> bool:
    return _Switch.shown


def log(message: str) -> None:
    """A progress line on stderr (not shown under --quiet; warnings use ``warn``)."""
    if _Switch.shown:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def set_from(args: argparse.Namespace) -> None:
    """The switch for one command: shown unless it was given --quiet."""
    show(not getattr(args, "quiet", False))
