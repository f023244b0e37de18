"""The records every stage passes on: what one frame produced (FrameResult, with a
DetectionResult per object found), a cell that closed (ClosedCell, a row of the ``cells``
table), and what the stages read from the model card beyond its input (CardFacts). Light on
purpose: every stage imports it, the recorder, snapshots, crops and run statistics without
importing detection or the model, detection's cluster size and the scale check without reading
the card's JSON themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.capture.base import Frame

if TYPE_CHECKING:  # edge.cells.detect imports scipy
    from edge.cells.detect import Detection

STAGES = ("capture_wait", "detect", "preprocess", "infer", "store", "total")


@dataclass(frozen=True)
class DetectionResult:
    """One detection in a frame, the cell (track) it belongs to and that cell's call so far; a
    view too when the model looked at it in this frame (``view`` is set)."""

    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1
    centroid_yx: tuple[float, float]
    area: int
    cluster: bool
    probability: float  # the cell's call so far: the mean of its views' logits, as a probability
    label: str
    positive: bool
    track: int = 0  # the cell's track number in this run
    view: int | None = None  # the number of the view the model took of it in this frame, if it did
    view_probability: float | None = None  # that one model call's answer
    view_label: str | None = None  # and the label it alone gives
    orientation: int = 0  # the dihedral orientation of that view (edge.cells.views.dihedral)


@dataclass(frozen=True)
class ClosedCell:
    """A cell whose track ended, with its averaged call (a row of the ``cells`` table)."""

    track: int
    field: int
    first_seen_at: float
    last_seen_at: float
    frames_seen: int
    views: int
    probability: float | None  # None only for a cell whose first view never ran (its frame failed)
    label: str | None
    cluster: bool
    area: int
    centroid_yx: tuple[float, float]
    reclassified: int
    end: str  # why it closed: see END_* below
    positive: bool = False
    crop: str | None = None  # the file name of its crop in crops/ (edge/record/crops.py), if one was kept


END_LOST, END_NEW_FIELD, END_RUN = "lost", "new field", "run stopped"
END_WHOLE = "next frame"  # mode "whole": every frame's window is a cell of its own (a flow channel)


@dataclass
class FrameResult:
    frame: Frame
    detections: list[DetectionResult]  # every object found in the frame, with its cell's call
    timings_ms: dict[str, float] = field(default_factory=dict)
    over_budget: bool = False
    views: int = 0  # model calls this frame
    new_cells: int = 0  # cells this frame started following
    closed: list[ClosedCell] = field(default_factory=list)  # cells whose tracks this frame ended
    open_cells: int = 0  # cells followed after this frame
    field_number: int = 0  # the stage field it shows (a run counts them from 0)
    new_field: bool = False
    found: list[Detection] = field(default_factory=list)  # what each of ``detections`` was found as (masks)

    @property
    def positives(self) -> int:
        return sum(seen.positive for seen in self.detections)

    @property
    def clusters(self) -> int:
        return sum(seen.cluster for seen in self.detections)

    @property
    def viewed(self) -> list[DetectionResult]:
        """The detections the model looked at in this frame (the rows of ``views``)."""
        return [seen for seen in self.detections if seen.view is not None]


def _positive_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _section(card_extra: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    section: Any = card_extra
    for key in path:
        section = section.get(key) if isinstance(section, Mapping) else None
    return section if isinstance(section, Mapping) else {}


@dataclass(frozen=True)
class CardFacts:
    """The model card's facts the stages act on, typed once here (None: the card does not say;
    older cards lack some): the training cells' median mask area in pixels at the training scale
    (cluster size, scale check), the labelled Raspberry Pi 4 estimate of ms per cell (frame
    budget), and whether training turned and mirrored every window (views in 8 orientations)."""

    training_median_area_px: float | None = None
    pi4_ms_per_cell: float | None = None
    learnt_orientations: bool = False

    @classmethod
    def from_extra(cls, card_extra: Mapping[str, Any]) -> CardFacts:
        """Read from a card's sections beyond its input spec (``ModelCard.extra``)."""
        return cls(
            training_median_area_px=_positive_number(_section(card_extra, "data", "cell_area_px").get("median")),
            pi4_ms_per_cell=_positive_number(_section(card_extra, "speed").get("pi4_estimate_ms_per_cell")),
            learnt_orientations=isinstance(_section(card_extra, "training", "settings").get("augment"), Mapping),
        )
