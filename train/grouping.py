"""Groups that hold both labels, and what to say about groups that cannot be split.

A common layout names each culture folder after its label (``MDA231/MDA231_10kD2``,
``PC3/PC3_10kD2``): no group then holds both labels, although the two folders are the same
condition. ``pair_groups`` pairs such folders by the part of the name that is not the label,
so a split by group keeps both lines of one condition together (and leave-one-group-out can
score each condition on both labels). ``describe_groups`` is what every refusal says it found.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import PurePath

SEPARATORS = "_- ."
MIN_GROUPS_PER_LABEL = 3  # fewer, and a held-out figure rests on one or two cultures of that line


def _normalised(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _without_label(group: str, label: str) -> str | None:
    """The group name with the label's name taken out (ignoring case), or None when absent."""
    index = group.lower().find(label.lower())
    if index < 0 or not label:
        return None
    rest = (group[:index] + SEPARATORS[0] + group[index + len(label) :]).strip(SEPARATORS)
    return rest or None


def _without_common_prefix(groups: Sequence[str]) -> dict[str, str] | None:
    """Each group without the prefix all of them share, cut back to a separator (``MDA231_``)."""
    if len(groups) < 2:
        return None
    first, last = min(groups), max(groups)  # the prefix of the extremes is everyone's
    length = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last)))
    prefix = first[:length]
    cut = max(prefix.rfind(c) for c in SEPARATORS) + 1
    if cut <= 0:
        return None
    rests = {group: group[cut:].strip(SEPARATORS) for group in groups}
    return rests if all(rests.values()) else None


def pair_groups(groups_by_label: dict[str, Sequence[str]]) -> dict[str, str] | None:
    """Old group -> paired group, when no group holds both labels and the names pair up; else None.

    The part of a group's name that is not the label is the label's name taken out of it, or,
    where the name does not contain the label (label ``MDA-MB-231``, group ``MDA231_10kD2``), the
    prefix all that label's groups share. Groups pair when that part is the same (ignoring case
    and separators) under both labels; a group with no partner keeps its own name.
    """
    labels = list(groups_by_label)
    if len(labels) != 2 or set(groups_by_label[labels[0]]) & set(groups_by_label[labels[1]]):
        return None  # already paired (some group holds both labels)
    rests: dict[str, dict[str, str]] = {}
    for label, groups in groups_by_label.items():
        by_label = {group: _without_label(group, label) for group in groups}
        if all(by_label.values()):
            rests[label] = by_label  # type: ignore[assignment]
        elif common := _without_common_prefix(sorted(groups)):
            rests[label] = common
        else:
            return None
    keys = [{_normalised(rest): rest for rest in rests[label].values()} for label in labels]
    shared = set(keys[0]) & set(keys[1])
    if not shared:
        return None
    mapping = {}
    for label in labels:
        for group, rest in rests[label].items():
            key = _normalised(rest)
            mapping[group] = keys[0][key] if key in shared else group
    return mapping


def describe_pairs(mapping: dict[str, str]) -> str:
    """ "10kD2 = MDA231_10kD2 + PC3_10kD2, ..." and the groups left unpaired."""
    members: dict[str, list[str]] = defaultdict(list)
    for old, new in sorted(mapping.items()):
        members[new].append(old)
    paired = [f"{new} = {' + '.join(olds)}" for new, olds in sorted(members.items()) if len(olds) > 1]
    alone = [olds[0] for new, olds in sorted(members.items()) if len(olds) == 1]
    text = "; ".join(paired)
    return text + (f"; left unpaired (one label only): {', '.join(alone)}" if alone else "")


def describe_groups(groups: Iterable[str], labels_of_group: dict[str, set[str]], labels: Sequence[str]) -> str:
    """What a refusal found: how many groups, which hold which label."""
    groups = sorted(set(groups))
    parts = []
    for label in labels:
        only = [g for g in groups if labels_of_group.get(g) == {label}]
        parts.append(f"{label} only in {len(only)}" + (f" ({', '.join(only[:6])}{', ...' if len(only) > 6 else ''})"
                                                         if only else ""))  # fmt: skip
    both = [g for g in groups if len(labels_of_group.get(g, ())) == 2]
    parts.append(f"both labels in {len(both)}" + (f" ({', '.join(both[:6])}{', ...' if len(both) > 6 else ''})"
                                                   if both else ""))  # fmt: skip
    return f"found {len(groups)} group(s): " + "; ".join(parts)


def few_groups_warnings(groups_per_label: dict[str, int]) -> list[str]:
    """A warning per label with fewer than MIN_GROUPS_PER_LABEL groups."""
    return [
        f"label {label!r} has only {count} group(s): a held-out figure rests on {count} culture(s) of it and "
        f"says little about a new one (at least {MIN_GROUPS_PER_LABEL} are advisable)"
        for label, count in groups_per_label.items()
        if count < MIN_GROUPS_PER_LABEL
    ]


# Characters that separate the parts of a file name (MDA231_10kD3(105).png: MDA231, 10kD3, 105, png).
NAME_SEPARATORS = "_. ()-"
_NAME_PART = f"[^/{NAME_SEPARATORS}]+"


def name_part_pattern(position: int) -> str:
    """A --group-by expression whose group is the file name's part at ``position`` (0: the first)."""
    skipped = f"(?:{_NAME_PART}[{NAME_SEPARATORS}]+){{{position}}}" if position else ""
    return f"/[{NAME_SEPARATORS}]*{skipped}({_NAME_PART})[^/]*$"


def suggest_name_pattern(files: Sequence[PurePath]) -> tuple[str, list[str]] | None:
    """A --group-by expression that names a culture for every file (LABEL/NAME paths relative to
    the data folder) from a part of its name, and the groups it makes; None when no part will do.

    A part will do when every file has it, it is not a per-file number (at most half as many values
    as files) and each label gets at least two groups of it; of those, the part whose groups hold
    both labels most often wins (the culture, not the cell line the name may also carry).
    """
    best: tuple[tuple[int, int], str, list[str]] | None = None
    longest = max((len(re.findall(_NAME_PART, f.name)) for f in files), default=0)
    for position in range(longest):
        pattern = name_part_pattern(position)
        matches = [re.search(pattern, f.as_posix()) for f in files]
        if not all(matches):
            continue
        labels_of: dict[str, set[str]] = defaultdict(set)
        for f, match in zip(files, matches, strict=True):
            labels_of[match.group(1)].add(f.parts[0])  # type: ignore[union-attr]
        per_label = defaultdict(int)
        for labels in labels_of.values():
            for label in labels:
                per_label[label] += 1
        if len(labels_of) * 2 > len(files) or len(per_label) < 2 or min(per_label.values()) < 2:
            continue
        score = (sum(len(labels) > 1 for labels in labels_of.values()), min(per_label.values()))
        if best is None or score > best[0]:
            best = (score, pattern, sorted(labels_of))
    return None if best is None else (best[1], best[2])
