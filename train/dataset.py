"""A labelled folder of single-cell images -> model-input tensors, labels and groups.

Layout: ``ROOT/<label>/.../<image>``, exactly two label folders, any depth below them. Every
image becomes a model input through ``edge.classify.preprocess``: the same window, mask and resize the
Pi uses, so there is no second preprocessing path to drift. The windows are kept too (before
resizing), because training augments at that resolution and then finishes them the same way.

The *group* of a file is the unit that splits never cut through (near-duplicate crops of the
same culture must not land on both sides of a split). By default it is the first folder below
the label folder; ``group_by`` picks another folder level or a regular expression on the path.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.capture.images import IMAGE_SUFFIXES, ImageError, read_grayscale
from edge.classify.preprocess import CROP_KINDS, InputSpec, UnsegmentableCrop, crop_cell, finish_input
from edge.errors import UsageError
from train import progress
from train.grouping import describe_pairs, pair_groups, suggest_name_pattern

# A few unreadable files are a fact of life in exported microscopy folders; more than this
# fraction means the folder is not what the user thinks it is.
DEFAULT_MAX_BAD_FRACTION = 0.05
UNSEGMENTABLE = "unsegmentable"  # an unmasked crop in which the detector found no cell (skipped)


class DatasetError(UsageError, ValueError):
    """The data folder cannot be used as given; the message says why."""


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: str
    group: str
    folder_group: str = ""  # the group before pairing across labels (train/grouping.py), when it changed


@dataclass
class Dataset:
    """Model inputs (uint8, N x size x size), ``y`` (1 = positive label) and groups per cell;
    ``windows`` (uint8, N x window_px x window_px) are the same cells before resizing."""

    images: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # str per cell
    paths: list[Path]
    labels: tuple[str, str]  # (negative, positive): the model's output order
    spec: InputSpec
    root: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    windows: np.ndarray | None = None
    areas: np.ndarray | None = None  # each cell's mask area in pixels at the images' scale
    crop_kinds: dict[str, int] = field(default_factory=dict)  # how many crops went which way (CROP_KINDS)
    digests: list[str] = field(default_factory=list)  # each cell's file_digest
    group_pairs: str = ""  # the groups paired across labels (train/grouping.py), said where they are used
    crowded: list[tuple[Path, int]] = field(default_factory=list)  # images holding several cells, and how many
    # With served inputs (train/served.py): each cell's renderings as the Pi masks them (uint8,
    # N x K x window_px x window_px; a cell's first ``rendering_counts`` slots hold them, the rest
    # are never drawn), and what making them found, for the card. ``images`` are then the first
    # renderings' model inputs; ``windows`` and ``areas`` stay the data set's (the card's statistics).
    renderings: np.ndarray | None = None
    rendering_counts: np.ndarray | None = None
    served: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def positive_label(self) -> str:
        return self.labels[1]

    def subset(self, index: np.ndarray) -> Dataset:
        index = np.asarray(index)
        return Dataset(
            images=self.images[index],
            y=self.y[index],
            groups=self.groups[index],
            paths=[self.paths[i] for i in index],
            labels=self.labels,
            spec=self.spec,
            root=self.root,
            skipped=self.skipped,
            windows=None if self.windows is None else self.windows[index],
            areas=None if self.areas is None else self.areas[index],
            crop_kinds=self.crop_kinds,
            digests=[self.digests[i] for i in index] if self.digests else [],
            group_pairs=self.group_pairs,
            crowded=[entry for entry in self.crowded if entry[0] in {self.paths[i] for i in index}],
            renderings=None if self.renderings is None else self.renderings[index],
            rendering_counts=None if self.rendering_counts is None else self.rendering_counts[index],
            served=self.served,
        )

    def trained_windows(self) -> np.ndarray:
        """Every window a fit draws from (renderings, or the windows): what a teacher's views are
        made of, so a student must see the very same pixels."""
        return self.windows if self.renderings is None else self.renderings

    def drawn_windows(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One window per member to train on: its window, or with served inputs one of its
        renderings at random. The one place training batches and distillation views take their
        cells from, so both see what the fit trains on (without renderings ``rng`` is untouched)."""
        if self.renderings is None or self.rendering_counts is None:
            return self.windows[members]
        return self.renderings[members, rng.integers(self.rendering_counts[members])]

    def relative_paths(self) -> list[str]:
        """Each cell's file, relative to the data folder (how a distillation file names cells)."""
        return [path.relative_to(self.root).as_posix() for path in self.paths]

    def class_counts(self) -> dict[str, int]:
        return {label: int(np.sum(self.y == value)) for value, label in enumerate(self.labels)}

    def group_summary(self) -> dict[str, dict[str, int]]:
        """Cells per label in each group, groups sorted by name."""
        summary: dict[str, dict[str, int]] = {}
        for group in sorted(set(self.groups.tolist())):
            members = self.y[self.groups == group]
            summary[group] = {label: int(np.sum(members == value)) for value, label in enumerate(self.labels)}
        return summary


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def label_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected DATA_DIR/<label>/.../<image>)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) != 2:
        names = ", ".join(p.name for p in folders) or "none"
        hint = (
            f"; fit a pair from a folder holding only those two, e.g. mkdir pair && ln -s {root.resolve()}/"
            f"{{{folders[0].name},{folders[1].name}}} pair/ && metascope-train fit pair --out NAME"
            if len(folders) > 2
            else f"; the label folders go directly in it: {root}/<label>/<culture>/<image>, one per cell line"
        )
        raise DatasetError(
            f"{root}: expected exactly two label folders (one per cell line), found {len(folders)}: {names}{hint}"
        )
    return folders


def resolve_labels(folders: Sequence[Path], positive: str | None) -> tuple[str, str]:
    """(negative, positive). Default positive: the second label folder in sorted order."""
    names = [p.name for p in folders]
    if positive is None:
        return names[0], names[1]
    if positive not in names:
        raise DatasetError(f"--positive {positive!r} is not one of the label folders: {', '.join(names)}")
    negative = names[0] if names[1] == positive else names[1]
    return negative, positive


def group_function(group_by: str | int | None):
    """Turn ``group_by`` into path-relative-to-label-folder -> group name.

    None or an integer N: the N-th folder below the label folder (1 = the immediate one).
    Anything else: a regular expression searched in the path relative to DATA_DIR (the label
    folder included); its first capture group, or the whole match without one, is the group.
    """
    if group_by is None or (isinstance(group_by, str) and group_by.isdigit()) or isinstance(group_by, int):
        level = 1 if group_by is None else int(group_by)
        if level < 1:
            raise DatasetError(f"--group-by level must be 1 or more (1 = the folder below the label), got {level}")

        def by_level(relative: Path) -> str | None:
            folders = relative.parts[1:-1]  # drop the label folder and the file name
            return folders[level - 1] if len(folders) >= level else None

        return by_level
    try:
        pattern = re.compile(group_by)
    except re.error as exc:
        raise DatasetError(f"--group-by {group_by!r} is not a valid regular expression: {exc}") from exc

    def by_pattern(relative: Path) -> str | None:
        match = pattern.search(relative.as_posix())
        if match is None:
            return None
        return match.group(1) if pattern.groups else match.group(0)

    return by_pattern


def discover(
    root: str | os.PathLike[str], group_by: str | int | None = None, positive: str | None = None
) -> tuple[list[LabelledFile], tuple[str, str]]:
    """Every image file under the two label folders with its label and group, sorted by path."""
    root = Path(root)
    folders = label_folders(root)
    labels = resolve_labels(folders, positive)
    return files_under(root, {folder: folder.name for folder in folders}, labels, group_by), labels


def files_under(
    root: Path, label_of: dict[Path, str], labels: tuple[str, str], group_by: str | int | None = None
) -> list[LabelledFile]:
    """Every image file under the given label folders (folder -> its label) with its group."""
    to_group = group_function(group_by)
    found: list[LabelledFile] = []
    ungrouped: list[Path] = []
    for folder, label in label_of.items():
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not is_hidden(p, root)
        )
        if not files:
            raise DatasetError(f"{folder}: label {folder.name!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            relative = path.relative_to(root)
            group = to_group(relative)
            if group is None:
                ungrouped.append(relative)
            else:
                found.append(LabelledFile(path, label, group))
    if ungrouped:
        every = ungrouped + [f.path.relative_to(root) for f in found]
        raise DatasetError(ungrouped_problem(root, ungrouped, every, group_by))
    if not isinstance(group_by, str) or group_by.isdigit():  # folder levels: a pattern says what it means
        found = paired_across_labels(found, labels)
    return found


def ungrouped_problem(root: Path, ungrouped: list[Path], every: list[Path], group_by: str | int | None) -> str:
    """What was found, why it cannot be used, and commands that would work (a --group-by
    expression checked on the files present)."""
    examples = ", ".join(str(p) for p in ungrouped[:3])
    loose = sum(len(p.parts) == 2 for p in ungrouped)  # directly in a label folder
    rule = "the default grouping (the folder below the label folder)" if group_by is None else f"--group-by {group_by}"
    found = f"{len(ungrouped)} of {len(every)} file(s) have no group under {rule}"
    if loose:
        found += f" ({loose} directly in a label folder, with no culture folder below it)"
    advice = (
        f"{found}, e.g. {examples}. Every file must belong to a group (a culture, slide or day) so that no split "
        f"cuts one. Put each culture's images in a folder of its own below its label, {root}/<label>/<culture>/, "
        f"and run `metascope-train fit {root} --out NAME`"
    )
    suggestion = suggest_name_pattern(every)
    if suggestion is None:
        return advice + "; or give --group-by a regular expression whose first group names each file's culture"
    pattern, groups = suggestion
    shown = ", ".join(groups[:6]) + (", ..." if len(groups) > 6 else "")
    return (
        f"{advice}; or, taking the culture from the file names ({len(groups)} groups: {shown}), "
        f"`metascope-train fit {root} --out NAME --group-by '{pattern}'`"
    )


def paired_across_labels(found: list[LabelledFile], labels: tuple[str, str]) -> list[LabelledFile]:
    """Files regrouped when their folders pair across labels by name (train/grouping.py)."""
    by_label = {label: sorted({f.group for f in found if f.label == label}) for label in labels}
    mapping = pair_groups(by_label)
    if mapping is None:
        return found
    return [LabelledFile(f.path, f.label, mapping[f.group], f.group) for f in found]


def load(
    files: Sequence[LabelledFile],
    labels: tuple[str, str],
    spec: InputSpec,
    root: str | os.PathLike[str],
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> Dataset:
    """Read and preprocess every file; unreadable ones, and unmasked crops in which the Pi's
    detector finds no cell, are skipped and listed in ``skipped``."""
    windows: list[np.ndarray] = []
    areas: list[int] = []
    kinds: Counter[str] = Counter()
    kept: list[LabelledFile] = []
    skipped: list[tuple[Path, str]] = []
    crowded: list[tuple[Path, int]] = []
    bar = tqdm(files, desc="loading images", unit="img", disable=not progress.shown(), file=sys.stderr, leave=False)
    for item in bar:
        try:
            cell = crop_cell(read_grayscale(item.path), spec)
        except UnsegmentableCrop as exc:
            kinds[UNSEGMENTABLE] += 1
            skipped.append((item.path, f"{item.path}: {exc}"))
            continue
        except ImageError as exc:
            skipped.append((item.path, str(exc)))
            continue
        windows.append(cell.window)
        areas.append(cell.area_px)
        kinds[cell.kind] += 1
        kept.append(item)
        if cell.cells_in_image > 1:
            crowded.append((item.path, cell.cells_in_image))
    bar.close()
    for path, reason in skipped:
        print(f"skipped {reason}" if str(path) in reason else f"skipped {path}: {reason}", file=sys.stderr)
    if files and len(skipped) > max_bad_fraction * len(files):
        raise DatasetError(
            f"{len(skipped)} of {len(files)} images could not be used (more than {max_bad_fraction:.0%}): "
            f"{len(skipped) - kinds[UNSEGMENTABLE]} unreadable, {kinds[UNSEGMENTABLE]} unmasked crops in which the "
            "detector finds no cell; see the files listed above"
        )
    check_every_label_read(files, kept, labels)
    size, side = spec.size, spec.window_px
    return Dataset(
        images=np.stack([finish_input(w, spec) for w in windows]) if windows else np.zeros((0, size, size), np.uint8),
        y=np.array([labels.index(item.label) for item in kept], dtype=np.int64),
        groups=np.array([item.group for item in kept], dtype=object),
        paths=[item.path for item in kept],
        labels=labels,
        spec=spec,
        root=Path(root),
        skipped=skipped,
        windows=np.stack(windows) if windows else np.zeros((0, side, side), np.uint8),
        areas=np.array(areas, dtype=np.int64),
        crop_kinds={kind: kinds[kind] for kind in (*CROP_KINDS, UNSEGMENTABLE)},
        digests=[file_digest(item.path) for item in kept],
        group_pairs=pairs_made(kept),
        crowded=crowded,
    )


def check_every_label_read(files: Sequence[LabelledFile], kept: Sequence[LabelledFile], labels: Sequence[str]) -> None:
    present = Counter(item.label for item in kept)
    given = {item.label for item in files}  # evaluate may be given one label's folder alone
    for label in labels:
        if label in given and present[label] == 0:
            raise DatasetError(f"label {label!r} has no readable images")


def pairs_made(files: Sequence[LabelledFile]) -> str:
    """The pairs made across labels, for the log, `evaluate` and the card ("" when none)."""
    mapping = {f.folder_group: f.group for f in files if f.folder_group}
    if not mapping:
        return ""
    return "groups paired across labels by the part of the name that is not the label: " + describe_pairs(mapping)


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's sha256: enough to recognise a training file again
    (the card keeps one per training cell, so 64 would only make it larger)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_folder(
    root: str | os.PathLike[str],
    spec: InputSpec,
    group_by: str | int | None = None,
    positive: str | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> Dataset:
    files, labels = discover(root, group_by, positive)
    return load(files, labels, spec, root, max_bad_fraction)


def select_groups(dataset: Dataset, groups: Iterable[str]) -> Dataset:
    wanted = list(groups)
    unknown = sorted(set(wanted) - set(dataset.groups.tolist()))
    if unknown:
        known = ", ".join(sorted(set(dataset.groups.tolist())))
        raise DatasetError(f"unknown group(s) {', '.join(unknown)}; the groups are: {known}")
    return dataset.subset(np.flatnonzero(np.isin(dataset.groups, wanted)))
