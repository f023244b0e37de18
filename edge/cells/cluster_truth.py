"""What became of each composed object in the detector's hands: the truth of a composed field
(edge.capture.composed) against the detections of one of its frames.

A single cell is *found* when a detection lies mostly on it; it is *flagged* when that detection
is called a cluster, and *split* when it comes out as two or more detections (counted twice).
Two or three touching cells (a pair, a triple) are *split* when each member's pixels lie mostly
in a detection of its own (each cell counted), *flagged* when they come out together in one
detection called a cluster, and *missed* otherwise: counted as one unflagged "cell".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.capture.composed import TruthObject
from edge.cells.detect import Detection

FRAGMENT_SHARE = 0.2  # a second detection holding this share of a single cell's pixels splits it
MEMBER_SHARE = 0.5  # a member is "in" a detection holding at least this share of its visible pixels

SINGLE, SPLIT, FLAGGED, MISSED, LOST = "single", "split", "flagged", "missed", "lost"


@dataclass(frozen=True)
class Outcome:
    """One truth object and what detection made of it; ``merged`` is the detection (index into the
    frame's detections) that holds most of it, -1 when none does."""

    kind: str  # the object's: single, pair, triple
    result: str  # single cells: single, split, flagged, lost; clusters: split, flagged, missed, lost
    merged: int
    pieces: tuple[int, ...]  # every detection lying mostly on the object


def paint(objects: Sequence[TruthObject], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(object number + 1, member number + 1) at each field pixel; 0 where nothing is."""
    owner = np.zeros(shape, dtype=np.int32)
    member = np.zeros(shape, dtype=np.int32)
    for number, obj in enumerate(objects, start=1):
        y0, x0, y1, x1 = obj.bbox
        owner[y0:y1, x0:x1][obj.mask] = number
        for index, part in enumerate(obj.members, start=1):
            my0, mx0, my1, mx1 = part.bbox
            member[my0:my1, mx0:mx1][part.mask] = index
    return owner, member


def outcomes(objects: Sequence[TruthObject], detections: Sequence[Detection], shape: tuple[int, int]) -> list[Outcome]:
    """Each truth object's outcome, in the order given."""
    owner, member = paint(objects, shape)
    # per object: detection index -> pixels of the object it holds; per (object, member) likewise
    held: list[dict[int, int]] = [{} for _ in objects]
    member_held: list[list[dict[int, int]]] = [[{} for _ in obj.members] for obj in objects]
    for index, found in enumerate(detections):
        y0, x0, y1, x1 = found.bbox
        under = owner[y0:y1, x0:x1][found.mask[: y1 - y0, : x1 - x0]]
        counts = np.bincount(under, minlength=len(objects) + 1)
        counts[0] = 0
        number = int(counts.argmax())
        if counts[number] == 0:
            continue  # lies on nothing composed (debris, noise)
        held[number - 1][index] = int(counts[number])
        parts = member[y0:y1, x0:x1][found.mask[: y1 - y0, : x1 - x0] & (owner[y0:y1, x0:x1] == number)]
        for part, count in enumerate(np.bincount(parts, minlength=len(objects[number - 1].members) + 1)[1:]):
            if count:
                member_held[number - 1][part][index] = int(count)
    return [_outcome(obj, held[i], member_held[i]) for i, obj in enumerate(objects)]


def _outcome(obj: TruthObject, held: dict[int, int], member_held: list[dict[int, int]]) -> Outcome:
    if not held:
        return Outcome(obj.kind, LOST, -1, ())
    merged = max(held, key=held.__getitem__)
    pieces = tuple(sorted(held))
    if obj.kind == "single":
        fragments = [i for i, count in held.items() if count >= FRAGMENT_SHARE * obj.area]
        return Outcome(obj.kind, SPLIT if len(fragments) > 1 else SINGLE, merged, pieces)
    homes = []
    for part, counts in zip(obj.members, member_held, strict=True):
        visible = int(part.mask.sum())
        best = max(counts, key=counts.__getitem__) if counts else -1
        homes.append(best if best >= 0 and counts[best] >= MEMBER_SHARE * visible else -1)
    if -1 not in homes and len(set(homes)) == len(homes):
        return Outcome(obj.kind, SPLIT, merged, pieces)
    return Outcome(obj.kind, "cluster?", merged, pieces)


def judged(outcome: Outcome, detections: Sequence[Detection]) -> str:
    """The outcome's result once the cluster flag of its main detection is read."""
    if outcome.result in (LOST, SPLIT) and outcome.kind != "single":
        return outcome.result
    flagged = outcome.merged >= 0 and detections[outcome.merged].cluster
    if outcome.kind == "single":
        return FLAGGED if outcome.result == SINGLE and flagged else outcome.result
    return FLAGGED if flagged else MISSED
