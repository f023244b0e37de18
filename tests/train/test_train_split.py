"""Grouped splits: a group never lands in two parts, whatever the groups look like."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from train.split import SplitError, cross_validation_folds, file_level_split, grouped_split


@st.composite
def grouped_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Random groups (some holding one label, some both) of random sizes."""
    count = draw(st.integers(min_value=4, max_value=14))
    groups, labels = [], []
    for index in range(count):
        size = draw(st.integers(min_value=1, max_value=25))
        kind = draw(st.sampled_from(["negative", "positive", "mixed"]))
        values = {"negative": [0], "positive": [1], "mixed": [0, 1]}[kind]
        drawn = [values[i % len(values)] for i in range(size)] if kind == "mixed" and size > 1 else [values[0]] * size
        groups += [f"g{index}"] * size
        labels += drawn
    return np.array(groups), np.array(labels)


def assert_disjoint_by_group(groups: np.ndarray, parts: list[np.ndarray]) -> None:
    seen: dict[str, int] = {}
    for number, index in enumerate(parts):
        for group in set(groups[index].tolist()):
            assert seen.setdefault(group, number) == number, f"group {group} is in parts {seen[group]} and {number}"
    everything = np.concatenate(parts)
    assert sorted(everything.tolist()) == list(range(len(groups))), "parts must cover every cell exactly once"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grouped_labels(), st.integers(min_value=0, max_value=10_000))
def test_grouped_split_never_puts_a_group_in_two_parts(data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    groups, y = data
    try:
        split = grouped_split(groups, y, seed=seed)
    except SplitError:
        return  # some random group layouts cannot give three parts with both labels; that is reported
    assert_disjoint_by_group(groups, [split.train, split.validation, split.test])
    for part in (split.train, split.validation, split.test):
        assert set(y[part].tolist()) == {0, 1}, "every part must hold both labels"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grouped_labels(), st.integers(min_value=0, max_value=10_000))
def test_cross_validation_folds_hold_out_whole_groups(data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    groups, y = data
    try:
        folds, _ = cross_validation_folds(groups, y, seed=seed)
    except SplitError:
        return
    held_out = np.concatenate([fold.split.test for fold in folds])
    assert sorted(held_out.tolist()) == list(range(len(y))), "every cell is held out exactly once"
    for fold in folds:
        assert_disjoint_by_group(groups, [fold.split.train, fold.split.validation, fold.split.test])


def test_leave_one_group_out_when_every_group_holds_both_labels() -> None:
    groups = np.repeat(["10kD2", "20kD1", "40kD3", "40kD1"], 10)
    y = np.tile([0, 1], 20)
    folds, rule = cross_validation_folds(groups, y)
    assert rule.startswith("leave-one-group-out")
    assert [fold.name for fold in folds] == ["10kD2", "20kD1", "40kD1", "40kD3"]
    for fold in folds:
        assert set(groups[fold.split.test]) == {fold.name}


def test_too_few_groups_is_a_clear_error() -> None:
    groups = np.array(["a"] * 5 + ["b"] * 5)
    y = np.array([0, 1] * 5)
    with pytest.raises(SplitError, match="group"):
        grouped_split(groups, y)


def test_file_level_split_mixes_groups_which_is_why_it_leaks() -> None:
    groups = np.repeat([f"g{i}" for i in range(5)], 20)
    y = np.tile([0, 1], 50)
    split = file_level_split(y, seed=0)
    shared = set(groups[split.train]) & set(groups[split.test])
    assert shared, "a file-level split puts cells of one group on both sides"


def test_refusals_say_what_they_found_and_what_would_work() -> None:
    groups = np.array(["MDA_a"] * 4 + ["PC3_b"] * 4)
    y = np.array([0] * 4 + [1] * 4)
    with pytest.raises(SplitError) as refusal:
        grouped_split(groups, y, labels=("MDA", "PC3"))
    assert "found 2 group(s): MDA only in 1 (MDA_a); PC3 only in 1 (PC3_b); both labels in 0" in str(refusal.value)
    with pytest.raises(SplitError) as refusal:
        cross_validation_folds(groups, y, labels=("MDA", "PC3"))
    assert "found 2 group(s)" in str(refusal.value)
    assert refusal.value.try_args == ("--cv-folds", "2")
    # The validation part comes from what the test part leaves: the message counts both.
    groups = np.repeat(["a1", "a2", "b1", "b2"], 5)
    y = np.repeat([0, 0, 1, 1], 5)
    with pytest.raises(SplitError) as refusal:
        grouped_split(groups, y, test_fraction=0.5, validation_fraction=0.25, labels=("MDA", "PC3"))
    assert "validation part from the groups left after the test part (4 in all)" in str(refusal.value)
    assert refusal.value.try_args == ("--patience", "0")
