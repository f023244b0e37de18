"""A model scored per tracked cell: its labelled crops composed into frames, run through edge's
own pipeline, and each tracked cell's call matched to the crop it was made of.

The crops of a labelled folder (masked, as the training data) become frames by edge's composer
(edge.capture.composed: each field shown ``repeats`` times with sub-pixel jitter and fresh
sensor noise, the truth of every object kept). Each frame goes through edge.service.pipeline's
Pipeline, the code `metascope run` drives: the Pi's detector and mask, the tracker and the view
scheduler. A tracked cell's call is the one the Pi logs for it in the cells table: the
ClosedCell its track ends with, the sigmoid of the mean of its views' logits.

Each group (culture) is composed and run apart, as one run of a rig sees one culture.
Each tracked cell is matched to a crop by position: in every frame the object its detection
holds most of (edge.cells.cluster_truth.outcomes, as the cluster bench does) votes, and the
crop it lay on in most frames is its truth. Cells the detector called clusters are counted, not
scored (a cluster's call is not one cell's); cells lying on no crop (noise) likewise. The crop
level figures come from the same crops' data-set model inputs (train/evaluate.py), over every
crop composed and over just the crops a scored cell was matched to (the pair that says what
the pipeline costs).

The frame budget is set out of reach: on a still field the Pi serves every owed view within a
field's 24 frames (views wait for budget, they are not dropped), and figures must not depend on
how busy the machine running the evaluation is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.capture.composed import ComposedSource, ComposeSettings, Crop, every_frame
from edge.capture.images import read_grayscale
from edge.cells.cluster_truth import outcomes
from edge.classify.classifier import Classifier
from edge.classify.preprocess import PREMASKED
from edge.config import Config, PipelineConfig, SourceConfig
from edge.records import ClosedCell
from edge.service.pipeline import Pipeline
from train.dataset import Dataset, DatasetError
from train.evaluate import classifier_probabilities
from train.metrics import binary_metrics

# The largest frame budget the config accepts: every view owed runs in the frame it is due.
BUDGET_OUT_OF_REACH_MS = PipelineConfig.__dataclass_fields__["budget_ms"].metadata["high"]
SCORED, CLUSTER, ON_NOTHING, UNCLASSIFIED = "scored", "cluster", "on no crop", "never classified"


@dataclass(frozen=True)
class FramesSettings:
    """How the crops are composed: the Pi's preview stream size, a still field held ``repeats``
    frames (8 views 3 frames apart need 22), ``per_frame`` cells at most, single cells only."""

    repeats: int = 24
    per_frame: int = 8
    seed: int = 0
    width: int = SourceConfig.width
    height: int = SourceConfig.height

    def compose(self) -> ComposeSettings:
        return ComposeSettings(
            width=self.width, height=self.height, per_frame=self.per_frame, repeats=self.repeats, seed=self.seed
        )


@dataclass
class TrackedCall:
    """One tracked cell as the Pi logs it, and the crop it was matched to (index into the
    dataset; -1 for none)."""

    cell: ClosedCell
    crop: int
    outcome: str  # SCORED, CLUSTER, ON_NOTHING or UNCLASSIFIED


@dataclass
class FramesEvaluation:
    crop_metrics: dict[str, Any]  # every crop composed, data-set model input
    matched_crop_metrics: dict[str, Any] | None  # the crops a scored cell was matched to
    cell_metrics: dict[str, Any] | None  # per scored tracked cell
    counts: dict[str, int]
    frames: int
    settings: FramesSettings
    cells: list[TrackedCall] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.__dict__,
            "frames": self.frames,
            "counts": self.counts,
            "crop_level": self.crop_metrics,
            "crop_level_matched": self.matched_crop_metrics,
            "per_tracked_cell": self.cell_metrics,
        }


def composed_crops(dataset: Dataset) -> list[Crop]:
    """Each dataset file as a crop for the composer; its ``source`` is its index in ``dataset``
    (as text), so a tracked cell's truth leads back to its crop's label, group and model input."""
    not_masked = {kind: n for kind, n in dataset.crop_kinds.items() if kind != PREMASKED and n}
    if not_masked:
        named = ", ".join(f"{n} {kind}" for kind, n in not_masked.items())
        raise DatasetError(
            f"{dataset.root}: --frames composes masked crops (a cell on black, as the training data); "
            f"this folder also holds crops that are not ({named})"
        )
    crops = []
    for index, path in enumerate(dataset.paths):
        crop = Crop.from_image(read_grayscale(path), dataset.labels[int(dataset.y[index])], str(index))
        if crop is not None:
            crops.append(crop)
    return crops


def pipeline_config() -> Config:
    """The service's defaults (detection, tracking, views), the frame budget out of reach."""
    return Config().with_overrides("pipeline", budget_ms=BUDGET_OUT_OF_REACH_MS)


def tracked_calls(
    classifier: Classifier,
    crops: list[Crop],
    settings: FramesSettings,
    on_frame: Callable[[int], None] | None = None,
) -> tuple[list[TrackedCall], int, set[int]]:
    """(every tracked cell with its matched crop, frames run, the crops that were shown)."""
    source = ComposedSource(crops, settings.compose())
    pipeline = Pipeline(classifier, pipeline_config())
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    closed: list[ClosedCell] = []
    shown: set[int] = set()
    frames = 0
    for frame in every_frame(source):
        result = pipeline.process(frame)
        closed += result.closed
        frames += 1
        objects = frame.truth
        shown.update(int(obj.members[0].source) for obj in objects)
        for obj, outcome in zip(objects, outcomes(objects, result.found, frame.pixels.shape), strict=True):
            if outcome.merged >= 0:
                votes[result.detections[outcome.merged].track][int(obj.members[0].source)] += 1
        if on_frame is not None:
            on_frame(frames)
    closed += pipeline.close_all()
    calls = []
    for cell in closed:
        crop = votes[cell.track].most_common(1)[0][0] if votes.get(cell.track) else -1
        if crop < 0:
            outcome = ON_NOTHING
        elif cell.probability is None:
            outcome = UNCLASSIFIED
        elif cell.cluster:
            outcome = CLUSTER
        else:
            outcome = SCORED
        calls.append(TrackedCall(cell, crop, outcome))
    return calls, frames, shown


def evaluate_frames(
    classifier: Classifier,
    dataset: Dataset,
    settings: FramesSettings | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> FramesEvaluation:
    """Crop-level and per-tracked-cell figures of ``classifier`` on ``dataset``'s crops."""
    settings = settings or FramesSettings()
    crops = composed_crops(dataset)
    calls: list[TrackedCall] = []
    frames, shown = 0, set()
    for group in sorted(set(dataset.groups.tolist())):  # a frame holds one culture, as on a rig
        ours = [crop for crop in crops if dataset.groups[int(crop.source)] == group]
        group_calls, group_frames, group_shown = tracked_calls(classifier, ours, settings, on_frame)
        calls, frames, shown = calls + group_calls, frames + group_frames, shown | group_shown
    threshold = classifier.threshold
    p_crop = classifier_probabilities(classifier, dataset.images)
    every = np.array(sorted(shown), dtype=np.int64)
    crop_metrics = binary_metrics(dataset.y[every], p_crop[every], threshold, dataset.groups[every])
    scored = [call for call in calls if call.outcome == SCORED]
    matched = np.array(sorted({call.crop for call in scored}), dtype=np.int64)
    cell_crops = np.array([call.crop for call in scored], dtype=np.int64)
    cell_p = np.array([call.cell.probability for call in scored], dtype=np.float64)
    cell_metrics = (
        binary_metrics(dataset.y[cell_crops], cell_p, threshold, dataset.groups[cell_crops]) if scored else None
    )
    matched_metrics = (
        binary_metrics(dataset.y[matched], p_crop[matched], threshold, dataset.groups[matched]) if scored else None
    )
    per_crop = Counter(call.crop for call in scored)
    outcome_counts = Counter(call.outcome for call in calls)
    clustered = {call.crop for call in calls if call.outcome == CLUSTER}
    counts = {
        "crops_in_folder": len(dataset),
        "crops_composed": len(shown),
        "crops_too_large_for_a_frame": len(dataset) - len(shown),
        "tracked_cells": len(calls),
        "tracked_cells_scored": outcome_counts[SCORED],
        "tracked_cells_flagged_cluster": outcome_counts[CLUSTER],
        "tracked_cells_on_no_crop": outcome_counts[ON_NOTHING],
        "tracked_cells_never_classified": outcome_counts[UNCLASSIFIED],
        "crops_matched": len(per_crop),
        "crops_with_several_cells": sum(n > 1 for n in per_crop.values()),
        "crops_only_as_cluster": len(clustered - set(per_crop)),
        "crops_missed": len(shown - set(per_crop) - clustered),
    }
    return FramesEvaluation(crop_metrics, matched_metrics, cell_metrics, counts, frames, settings, calls)


def format_counts(counts: dict[str, int], frames: int, settings: FramesSettings) -> str:
    c = counts
    return (
        f"{frames} frames ({settings.width}x{settings.height}, each field {settings.repeats} frames, "
        f"seed {settings.seed}) of {c['crops_composed']} crops ({c['crops_too_large_for_a_frame']} too large for a "
        f"frame); tracked cells {c['tracked_cells']}: scored {c['tracked_cells_scored']}, flagged cluster "
        f"{c['tracked_cells_flagged_cluster']}, on no crop {c['tracked_cells_on_no_crop']}, never classified "
        f"{c['tracked_cells_never_classified']}; crops matched to a scored cell {c['crops_matched']} (to several "
        f"{c['crops_with_several_cells']}), seen only as a cluster {c['crops_only_as_cluster']}, missed "
        f"{c['crops_missed']}"
    )
