"""The commonest small lab: two cultures of each line, paired into two groups that each hold both
labels. Cross-validation needs no spare group when nothing is held back for validation; without
--cv the shipped model still learns from every cell, and the figures say what they rest on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train_fit import TINY

from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.errors import ExitCode
from train.cli import main
from train.split import SplitError, cross_validation_folds, grouped_split

QUICK = [*TINY, "--epochs", "2", "--min-agreement", "0.5", "--no-leak-check"]


@pytest.fixture(scope="module")
def two_cultures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """round/round_g0, round_g1, spindle/spindle_g0, spindle_g1: pairs into groups g0 and g1."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells"), per_group=8, groups=2, seed=4)


def test_two_mixed_groups_give_two_leave_one_out_folds() -> None:
    groups = np.repeat(["c1", "c2"], 10)
    y = np.tile([0, 1], 10)
    folds, rule = cross_validation_folds(groups, y)
    assert rule == "leave-one-group-out over 2 groups"
    assert [fold.name for fold in folds] == ["c1", "c2"]
    for fold in folds:
        assert set(groups[fold.split.test]) == {fold.name} and set(groups[fold.split.train]) == {"c1", "c2"} - {
            fold.name
        }


def test_early_stopping_with_two_groups_says_validation_needs_a_third() -> None:
    groups = np.repeat(["c1", "c2"], 10)
    y = np.tile([0, 1], 10)
    with pytest.raises(SplitError) as refusal:
        cross_validation_folds(groups, y, validation_fraction=0.15)
    assert "a third group" in str(refusal.value)
    assert refusal.value.try_args == ("--patience", "0")
    with pytest.raises(SplitError) as refusal:
        grouped_split(groups, y, validation_fraction=0.15)
    assert "a third group" in str(refusal.value)


def test_fit_cross_validates_two_cultures(two_cultures: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    assert main(["fit", str(two_cultures), "--out", str(out), "--positive", "spindle", "--cv", *QUICK]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    cv = card["evaluation"]["cross_validation"]
    assert [fold["held_out"] for fold in cv["folds"]] == ["g0", "g1"]
    assert card["data"]["trained_on"]["cells"] == 32


def test_fit_with_patience_and_two_cultures_names_the_missing_group(two_cultures: Path, tmp_path: Path, capsys) -> None:
    fit = ["fit", str(two_cultures), "--out", str(tmp_path / "m"), "--cv", *QUICK, "--patience", "2"]
    assert main(fit) == ExitCode.USAGE
    assert "a third group" in capsys.readouterr().err


def test_a_single_split_ships_a_model_of_every_cell_and_says_what_was_held_out(
    two_cultures: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "split"
    assert main(["fit", str(two_cultures), "--out", str(out), "--positive", "spindle", *QUICK]) == 0
    headline = capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["data"]["trained_on"]["cells"] == 32, "the shipped model learns from every cell"
    assert card["data"]["trained_on"]["groups"] == ["g0", "g1"]
    split = card["evaluation"]["split"]
    assert len(split["groups"]["test"]) == 1
    # One of two equal groups was tested on: half the cells, and every figure says so.
    assert "20 %" not in split["rule"] and "20%" not in split["rule"]
    assert "16 of 32 cells (50%)" in split["rule"]
    assert "16 of 32 cells (50%)" in headline
    report = out.with_name("split.report.md").read_text()
    assert "16 of 32 cells (50%)" in report
    assert "trained on all 32 cells" in report.lower()
