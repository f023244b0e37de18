"""Splits by group, never by file.

Crops of one culture are near-duplicates of each other (and the shared data set still holds
rotated or blurred copies), so a file-level split puts the same cell on both sides and
reports a figure no new culture will reproduce. Every split here assigns whole groups.
``file_level_split`` exists only to show, in the report, how much such a leak inflates.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from edge.errors import UsageError
from train.grouping import describe_groups
from train.recipe import TEST_FRACTION, VALIDATION_FRACTION


class SplitError(UsageError, ValueError):
    """The groups cannot be split as asked; the message says what it found and what is missing.
    ``try_args`` would split these groups when added to the same command, after taking out
    ``drop_args`` (make_model turns them into a command line)."""

    def __init__(self, message: str, try_args: tuple[str, ...] = (), drop_args: tuple[str, ...] = ()):
        super().__init__(message)
        self.try_args, self.drop_args = try_args, drop_args


def found_groups(groups: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> str:
    """A refusal's account of the groups: how many, and which hold which label."""
    labels_of = {str(g): {labels[int(v)] for v in np.unique(y[groups == g])} for g in np.unique(groups)}
    return describe_groups(labels_of.keys(), labels_of, labels)


@dataclass(frozen=True)
class Split:
    """Indices of the cells in each part, and the groups each part holds."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    rule: str

    def groups_of(self, groups: np.ndarray) -> dict[str, list[str]]:
        return {
            part: sorted(set(groups[index].tolist()))
            for part, index in (("train", self.train), ("validation", self.validation), ("test", self.test))
        }


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def hold_out_groups(
    groups: np.ndarray,
    y: np.ndarray,
    fraction: float,
    seed: int,
    what: str = "held-out part",
    labels: Sequence[str] = ("label 0", "label 1"),
    try_args: tuple[str, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions: about ``fraction`` of the cells, as whole groups, with
    both labels on each side when the groups allow it (stratified grouped folds)."""
    unique = np.unique(groups)
    found = found_groups(groups, y, labels)
    if len(unique) < 2:
        raise SplitError(f"cannot make a {what}: it needs a group of its own; {found}", try_args)
    folds = int(np.clip(round(1.0 / fraction), 2, len(unique)))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "least populated class has fewer members than n_splits": expected with few groups;
        # folds without both labels are rejected below instead.
        warnings.simplefilter("ignore", UserWarning)
        try:
            candidates = list(splitter.split(np.zeros(len(y)), y, groups))
        except ValueError as exc:  # fewer cells of a label than folds
            raise SplitError(f"cannot make a {what} ({exc}); {found}", try_args) from exc
    # Prefer a fold whose both sides hold both labels (a test part with one label has no AUC).
    for kept, held in candidates:
        if _both_classes(y[kept]) and _both_classes(y[held]):
            return kept, held
    raise SplitError(
        f"cannot make a {what} that holds both labels with both labels left beside it; {found}",
        try_args,
    )


def need_third_group(groups: np.ndarray, y: np.ndarray, labels: Sequence[str], why: str) -> None:
    """A validation part is a group beside the train and test groups: two groups cannot give it."""
    if len(np.unique(groups)) < 3:
        found = found_groups(groups, y, labels)
        raise SplitError(f"{why} a third group besides the train and test groups; {found}", ("--patience", "0"))


def grouped_split(
    groups: np.ndarray,
    y: np.ndarray,
    test_fraction: float = TEST_FRACTION,
    validation_fraction: float | None = VALIDATION_FRACTION,
    seed: int = 0,
    labels: Sequence[str] = ("label 0", "label 1"),
) -> Split:
    """Train / validation / test by whole groups, each part holding both labels. Without
    ``validation_fraction`` (no early stopping) there is no validation part."""
    groups, y = np.asarray(groups), np.asarray(y)
    # Leave-one-group-out tests on every group in turn, so it needs no spare groups for a test
    # part; it is suggested only where it would work (2 groups or more, each holding both labels).
    unique = np.unique(groups)
    logo = len(unique) >= 2 and all(_both_classes(y[groups == group]) for group in unique)
    # A validation part exists only for early stopping: fixed epochs (--patience 0) need none.
    what = f"validation part from the groups left after the test part ({len(unique)} in all)"
    if validation_fraction is not None:
        need_third_group(groups, y, labels, f"cannot make a {what}: early stopping (--patience) needs")
    rest, test = hold_out_groups(groups, y, test_fraction, seed, "test part", labels, ("--cv",) if logo else ())
    if validation_fraction is None:
        return Split(np.sort(rest), np.zeros(0, dtype=np.int64), np.sort(test), split_rule(groups, test))
    inner_fraction = validation_fraction / (1.0 - test_fraction)
    train, validation = hold_out_groups(
        groups[rest], y[rest], inner_fraction, seed + 1, what, labels, ("--patience", "0")
    )
    return Split(
        train=np.sort(rest[train]),
        validation=np.sort(rest[validation]),
        test=np.sort(test),
        rule=split_rule(groups, test, rest[validation]),
    )


def split_rule(groups: np.ndarray, test: np.ndarray, validation: np.ndarray | None = None) -> str:
    """What a split held out, counted: whole groups make the shares far from the asked-for
    fractions when there are few of them (one of two groups is half the cells)."""

    def share(part: np.ndarray, name: str) -> str:
        return (
            f"{len(np.unique(groups[part]))} of {len(np.unique(groups))} groups as {name}, {len(part)} of "
            f"{len(groups)} cells ({len(part) / len(groups):.0%})"
        )

    held = share(test, "test") + ("" if validation is None else "; " + share(validation, "validation"))
    return f"by whole groups: {held}"


@dataclass(frozen=True)
class Fold:
    name: str  # the held-out group(s)
    split: Split


def cross_validation_folds(
    groups: np.ndarray,
    y: np.ndarray,
    folds: int | None = None,
    seed: int = 0,
    validation_fraction: float | None = None,
    labels: Sequence[str] = ("label 0", "label 1"),
) -> tuple[list[Fold], str]:
    """Leave-one-group-out when every group holds both labels (each fold gets its own ROC AUC),
    else ``folds`` (default 5) stratified grouped folds. With ``validation_fraction`` (early
    stopping), whole groups of each fold's training part are held back as its validation
    split; without, the fold trains on every group it does not test on."""
    groups, y = np.asarray(groups), np.asarray(y)
    unique = np.unique(groups)
    found = found_groups(groups, y, labels)
    no_cv = ("--cv", "--cv-folds")  # without them: one test part of whole groups
    every_group_mixed = all(_both_classes(y[groups == group]) for group in unique)
    if validation_fraction is not None:  # each fold tests on a group and validates on another
        need_third_group(groups, y, labels, "early stopping (--patience) holds back a validation group in every "
                         "fold besides the one it tests: that needs")  # fmt: skip
    if folds is None and every_group_mixed:
        # Two groups that each hold both labels are two honest folds (each trains on the other).
        if len(unique) < 2:
            raise SplitError(f"leave-one-group-out needs at least 2 groups; {found}", drop_args=no_cv)
        parts = [(str(group), np.flatnonzero(groups != group), np.flatnonzero(groups == group)) for group in unique]
        rule = f"leave-one-group-out over {len(unique)} groups"
    else:
        count = folds or 5
        if len(unique) < count:
            fewer = ("--cv-folds", str(len(unique))) if len(unique) >= 2 else ()
            raise SplitError(f"{count} grouped folds need at least {count} groups; {found}", fewer,
                             () if fewer else no_cv)  # fmt: skip
        splitter = StratifiedGroupKFold(n_splits=count, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                parts = [
                    ("+".join(sorted(set(groups[test].tolist()))), rest, test)
                    for rest, test in splitter.split(np.zeros(len(y)), y, groups)
                ]
            except ValueError as exc:  # fewer cells of a label than folds
                raise SplitError(f"cannot make {count} grouped folds ({exc}); {found}", drop_args=no_cv) from exc
        rule = f"{count} stratified folds by group"
    result = []
    for index, (name, rest, test) in enumerate(parts):
        if validation_fraction is None:
            split = Split(np.sort(rest), np.zeros(0, dtype=np.int64), np.sort(test), rule)
        else:
            train, validation = hold_out_groups(
                groups[rest],
                y[rest],
                validation_fraction,
                seed + index,
                f"validation part for fold {name}",
                labels,
                ("--patience", "0"),
            )
            split = Split(np.sort(rest[train]), np.sort(rest[validation]), np.sort(test), rule)
        result.append(Fold(name, split))
    return result, rule


def file_level_split(
    y: np.ndarray, seed: int = 0, test_fraction: float = TEST_FRACTION, validation_fraction: float = VALIDATION_FRACTION
) -> Split:
    """A random split by file, stratified by label: the leaky split, for comparison only."""
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=y, random_state=seed)
    inner = validation_fraction / (1.0 - test_fraction)
    train, validation = train_test_split(rest, test_size=inner, stratify=y[rest], random_state=seed + 1)
    return Split(np.sort(train), np.sort(validation), np.sort(test), "by file (random, stratified): leaky")
