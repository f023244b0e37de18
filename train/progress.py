"""Progress output of the training commands (a line per step, a bar while loading, a line per
epoch, all on stderr) and the one switch that turns it off: `--quiet`, set once per command by
train/cli.py. Warnings and errors are shown whatever the switch says."""

from __future__ import annotations

import argparse
import sys


class _Switch:
    shown = True


class _Plan:
    """The epochs a command plans to train (every fit), and those done: the time-left estimate."""

    epochs = 0
    done = 0
    seconds = 0.0


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


def plan(fits: int, epochs: int, cells: int) -> None:
    """Say at the start what the command will train; each epoch line then estimates the time left."""
    _Plan.epochs, _Plan.done, _Plan.seconds = fits * epochs, 0, 0.0
    log(f"plan: {fits} fits of {epochs} epochs (at most) on up to {cells} cells; the first epoch's time "
        "gives an estimate of the rest")  # fmt: skip


def epoch_done(seconds: float) -> str:
    """Count one epoch of ``seconds``; the time the planned epochs left will take at that pace."""
    _Plan.done += 1
    _Plan.seconds += seconds
    left = max(_Plan.epochs - _Plan.done, 0) * _Plan.seconds / _Plan.done
    if not _Plan.epochs:
        return ""
    return f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"


def state() -> tuple[bool, int, int, float]:
    """What a child process needs to go on showing progress as this one would (train/isolated.py)."""
    return _Switch.shown, _Plan.epochs, _Plan.done, _Plan.seconds


def restore(saved: tuple[bool, int, int, float]) -> None:
    _Switch.shown, _Plan.epochs, _Plan.done, _Plan.seconds = saved
