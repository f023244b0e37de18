"""Cross-validation folds train in processes of their own (train/isolated.py), so a fit's memory
does not grow with its folds: what a fold returns, raises or dies of reaches the fit as it was."""

from __future__ import annotations

import math
import os

import pytest

from edge.errors import CommandError
from train import progress
from train.isolated import in_fresh_process


def test_a_step_runs_in_another_process_and_its_result_comes_back() -> None:
    assert in_fresh_process("a step", os.getpid) != os.getpid()
    assert in_fresh_process("a step", math.hypot, 3.0, 4.0) == 5.0


def test_a_steps_error_is_raised_here_as_it_was_there() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        in_fresh_process("a step", int, "not a number")


def test_a_step_whose_process_dies_is_named_in_a_clear_error() -> None:
    # os.abort: the child ends on SIGABRT without a result, as one the kernel kills for memory would.
    with pytest.raises(CommandError, match=r"^cross-validation fold 2/7 \(40kD1\): its process ended without a result"):
        in_fresh_process("cross-validation fold 2/7 (40kD1)", os.abort)


def test_the_progress_display_carries_on_across_the_step() -> None:
    """The epoch count and time estimate go on where the child left them; --quiet holds there too."""
    saved = progress.state()
    try:
        progress.restore((False, 10, 3, 30.0))
        assert in_fresh_process("a step", progress.epoch_done, 10.0) == "about 60 s left"
        assert progress.state() == (False, 10, 4, 40.0)
        assert in_fresh_process("a step", progress.shown) is False
    finally:
        progress.restore(saved)
