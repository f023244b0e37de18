"""Which tracked cells the model looks at this frame, and what each cell's call is.

A cell's first view runs in the frame its track starts. More views follow, each from a later
frame (``view_interval_frames`` apart, so each sees fresh sensor noise and a new sub-pixel
position) until the cell has ``views_per_cell``; after that the model never sees it again
unless its area changes by more than ``reclassify_area_change`` (a fraction of the area at its
first view) or it becomes or stops being a cluster (division, detachment, a cluster forming) for
CHANGE_CONFIRM_FRAMES frames in a row: then its views start again. (A single frame is not
enough: at the edge of the cluster test a cluster's flag flickers with sensor noise, and each
flicker would throw its K views away.) A model that learnt from windows turned by 90 degrees and mirrored
(train/augment.py does that to every training window; the card records the augmentation) also
sees each view in another of the 8 dihedral orientations, made by turning and mirroring the one
model input edge.classify.preprocess makes (never a second preprocessing path). A cell's probability is
the sigmoid of the mean of its views' logits.

The frame budget says how many views a frame may run. First views (new or changed cells) always
run; views still owed run while the budget lasts, those with the fewest views and waiting
longest first, and the rest wait for a later frame. Nothing is queued: a view is always cut from
the frame it runs on, so what waits is at most ``views_per_cell`` - 1 views per live track.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.cells.logits import logit, sigmoid
from edge.cells.tracking import Track

DIHEDRAL_VIEWS = 8
CHANGE_CONFIRM_FRAMES = 3  # a change must last this many frames in a row to re-classify a cell
# The order views take the 8 orientations in (v: v % 4 quarter turns, mirrored when v >= 4):
# each next one differs from those before it, so any first K cover turns and mirror images.
DIHEDRAL_ORDER = (0, 6, 1, 7, 2, 4, 3, 5)


def dihedral(image: np.ndarray, variant: int) -> np.ndarray:
    """Model input ``image`` (H x W[, C]) in orientation ``variant`` (0..7; 0 = as it is)."""
    turned = np.rot90(image, variant % 4, axes=(0, 1))
    return np.ascontiguousarray(turned[:, ::-1] if variant >= 4 else turned)


@dataclass
class CellCall:
    """The views of one tracked cell since its last (re)classification."""

    area: int  # at its first view: the reference for reclassify_area_change
    cluster: bool
    logits: list[float] = field(default_factory=list)
    last_view_frame: int = -1
    reclassified: int = 0  # times its views started again after a change
    changed_frames: int = 0  # frames in a row it has differed from its first view's area or cluster flag

    @property
    def views(self) -> int:
        return len(self.logits)

    @property
    def probability(self) -> float | None:
        return sigmoid(sum(self.logits) / len(self.logits)) if self.logits else None


@dataclass(frozen=True)
class PlannedView:
    index: int  # of the detection (and its track) in this frame
    track: int  # the track's number
    view: int  # the view's number within the cell's current series (0 = its first)
    orientation: int  # the dihedral variant its model input is turned to


class ViewScheduler:
    def __init__(
        self, views_per_cell: int, view_interval_frames: int, reclassify_area_change: float, orientations: bool
    ):
        self.views_per_cell = views_per_cell
        self.view_interval_frames = view_interval_frames
        self.reclassify_area_change = reclassify_area_change
        self.orientations = orientations
        self.calls: dict[int, CellCall] = {}
        self.frame = 0

    def plan(self, tracks: Sequence[Track], budget_views: int) -> list[PlannedView]:
        """The views to run in this frame, whose detections' tracks are ``tracks``: every first
        view, then owed ones up to ``budget_views`` in all."""
        self.frame += 1
        first, owed = [], []
        for index, track in enumerate(tracks):
            call = self.calls.get(track.number)
            if call is None or self._changed_for_good(call, track):
                found, again = track.detection, 0 if call is None else call.reclassified + 1
                call = self.calls[track.number] = CellCall(found.area, found.cluster, reclassified=again)
            if call.views == 0:  # new, changed, or its first view failed with its frame
                first.append(index)
            elif call.views < self.views_per_cell and self.frame - call.last_view_frame >= self.view_interval_frames:
                owed.append(index)
        owed.sort(key=lambda i: (self.calls[tracks[i].number].views, self.calls[tracks[i].number].last_view_frame))
        chosen = first + owed[: max(0, budget_views - len(first))]
        planned = []
        for index in chosen:
            number = tracks[index].number
            view = self.calls[number].views
            orientation = DIHEDRAL_ORDER[view % DIHEDRAL_VIEWS] if self.orientations else 0
            planned.append(PlannedView(index, number, view, orientation))
        return planned

    def record(self, track: int, probability: float) -> None:
        """One view's answer for ``track`` in this frame."""
        call = self.calls[track]
        call.logits.append(logit(probability))
        call.last_view_frame = self.frame

    def forget(self, track: int) -> CellCall | None:
        """The ended track's call (None if it never had one), no longer followed."""
        return self.calls.pop(track, None)

    def owed(self) -> int:
        """Views the live cells are still owed."""
        return sum(max(0, self.views_per_cell - call.views) for call in self.calls.values())

    def _changed_for_good(self, call: CellCall, track: Track) -> bool:
        detection = track.detection
        differs = detection.cluster != call.cluster
        differs = differs or abs(detection.area - call.area) > self.reclassify_area_change * call.area
        call.changed_frames = call.changed_frames + 1 if differs else 0
        return call.changed_frames >= CHANGE_CONFIRM_FRAMES
