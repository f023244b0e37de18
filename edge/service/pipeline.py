"""One frame in, one FrameResult out: find the cells, follow each across frames (edge.cells.tracking),
cut the model input of the views due (edge.cells.views) and classify them in one batched call, and
time every stage.

Model input comes only from edge.classify.preprocess (the functions training uses), with the window
rescaled when the rig's pixel size differs from the model's training scale.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edge.capture.base import Frame
from edge.cells.detect import Detection, DetectSettings, detect
from edge.cells.scale import detect_settings
from edge.cells.tracking import Track, Tracker, TrackUpdate
from edge.cells.views import PlannedView, ViewScheduler, dihedral
from edge.classify.classifier import Classifier
from edge.classify.preprocess import model_input
from edge.config import Config
from edge.records import END_LOST, END_NEW_FIELD, END_RUN, END_WHOLE, ClosedCell, DetectionResult, FrameResult

# pipeline.budget_ms = 0 (the default) derives the budget from the model: this many cells at
# the card's Raspberry Pi 4 estimate per cell, plus detection, preprocessing and storage (about
# 4x this project's x86 dev VM figure for a 20-cell frame, 12 ms), never below the floor.
BUDGET_CELLS = 20
BUDGET_FRAME_OVERHEAD_MS = 50.0
BUDGET_FLOOR_MS = 100.0


# Views beyond the first ones run while they fit this share of what the budget leaves after
# detection (the rest is for storing the frame and for the estimate being off).
VIEW_BUDGET_SHARE = 0.8
VIEW_COST_SMOOTHING = 0.2  # weight of each frame's measured ms per view in the running estimate
VIEW_COST_FALLBACK_MS = 15.0  # ms per view before any is measured, when the card has no estimate


def view_cost_guess_ms(classifier: Classifier) -> float:
    """ms per view before the first frame measures it: the card's Pi 4 estimate per cell."""
    per_cell = classifier.card.facts.pi4_ms_per_cell
    return VIEW_COST_FALLBACK_MS if per_cell is None else per_cell


def budget_ms(configured_ms: float, classifier: Classifier) -> float:
    """The per-frame latency budget: the configured one, or (0) one that follows the model."""
    if configured_ms > 0:
        return configured_ms
    per_cell = classifier.card.facts.pi4_ms_per_cell
    if per_cell is None:
        return BUDGET_FLOOR_MS
    estimate = BUDGET_CELLS * per_cell + BUDGET_FRAME_OVERHEAD_MS
    return max(BUDGET_FLOOR_MS, 10.0 * math.ceil(estimate / 10.0))


class Pipeline:
    def __init__(self, classifier: Classifier, config: Config):
        self.classifier = classifier
        self.spec = classifier.input_spec
        self.mode = config.pipeline.mode
        rig_pixel_size = config.pipeline.pixel_size_um or None
        self.settings: DetectSettings
        self.settings, self.cluster_rule = detect_settings(
            config.detect, classifier.card.facts.training_median_area_px, self.spec.pixel_size_um, rig_pixel_size
        )
        self.window_px = self.spec.window_for(rig_pixel_size)
        self.whole_window_px = config.pipeline.whole_window_px or self.window_px
        self.threshold = config.model.threshold or classifier.threshold
        self.budget_ms = budget_ms(config.pipeline.budget_ms, classifier)
        self._positive = classifier.positive_label
        self._negative = classifier.card.negative_label
        tracking = config.tracking
        self.tracker = Tracker(tracking.max_match_px, tracking.lost_after_frames, tracking.new_field_fraction)
        self.views = ViewScheduler(
            tracking.views_per_cell,
            tracking.view_interval_frames,
            tracking.reclassify_area_change,
            orientations=classifier.card.facts.learnt_orientations,
        )
        self.ms_per_view = view_cost_guess_ms(classifier)
        self._closed: list[ClosedCell] = []  # ended, not yet handed out with a frame's result

    def process(self, frame: Frame) -> FrameResult:
        """Detect, track, run the views due and update each cell's call; ``timings_ms`` gets
        detect, preprocess and infer."""
        started = time.perf_counter()
        found, update = self._detect_and_track(frame)
        detected = time.perf_counter()
        planned = self.views.plan(update.tracks, self.budget_views((detected - started) * 1000.0))
        batch = self._inputs(frame, found, planned)
        prepared = time.perf_counter()
        probabilities = self.classifier.predict(batch) if len(batch) else np.zeros(0, dtype=np.float32)
        inferred = time.perf_counter()
        if planned:
            measured = (inferred - detected) * 1000.0 / len(planned)
            self.ms_per_view += VIEW_COST_SMOOTHING * (measured - self.ms_per_view)
        answers = {}
        for view, probability in zip(planned, probabilities.tolist(), strict=True):
            self.views.record(view.track, probability)
            answers[view.index] = (view, probability)
        detections = [self._detection(one, track, answers.get(index)) for index, (one, track) in
                      enumerate(zip(found, update.tracks, strict=True))]  # fmt: skip
        closed, self._closed = self._closed, []
        return FrameResult(
            frame=frame,
            detections=detections,
            timings_ms={
                "detect": (detected - started) * 1000.0,
                "preprocess": (prepared - detected) * 1000.0,
                "infer": (inferred - prepared) * 1000.0,
            },
            views=len(planned),
            new_cells=len(update.started),
            closed=closed,
            open_cells=len(self.tracker.live),
            field_number=self.tracker.field,
            new_field=update.new_field,
            found=found,
        )

    def _detect_and_track(self, frame: Frame) -> tuple[list[Detection], TrackUpdate]:
        """The frame's detections and the tracker's update; the cells it ended are closed here,
        before classifying, so a frame that fails later loses no ended cell (the next frame's
        result carries it)."""
        whole = self.mode == "whole"
        found = [self.whole_window(frame.pixels)] if whole else detect(frame.pixels, self.settings)
        ended_before = self.tracker.end_all() if whole else []
        update = self.tracker.update(found, frame.captured_at)
        end = END_NEW_FIELD if update.new_field else END_LOST
        self._closed += [self._close(track, END_WHOLE) for track in ended_before]
        self._closed += [self._close(track, end) for track in update.ended]
        return found, update

    def _inputs(self, frame: Frame, found: list[Detection], planned: list[PlannedView]) -> np.ndarray:
        """The model input of each planned view, turned to its orientation: (N, size, size) uint8."""
        batch = np.empty((len(planned), self.spec.size, self.spec.size), dtype=np.uint8)
        for row, view in enumerate(planned):
            one = found[view.index]
            cell = model_input(frame.pixels, one.centroid_yx, self.spec, one.mask, one.origin_yx, self.window_px)
            batch[row] = dihedral(cell, view.orientation)
        return batch

    def close_all(self) -> list[ClosedCell]:
        """Close every live cell (the run stops)."""
        closed, self._closed = self._closed, []
        return closed + [self._close(track, END_RUN) for track in self.tracker.end_all()]

    def budget_views(self, detect_ms: float) -> int:
        """How many views this frame's budget holds after detection (first views run anyway)."""
        spare_ms = (self.budget_ms - detect_ms) * VIEW_BUDGET_SHARE
        return max(0, int(spare_ms / max(self.ms_per_view, 1e-3)))

    def _label(self, probability: float) -> tuple[str, bool]:
        positive = probability >= self.threshold
        return (self._positive if positive else self._negative), positive

    def _detection(self, found: Detection, track: Track, answer: tuple[PlannedView, float] | None) -> DetectionResult:
        call = self.views.calls[track.number].probability
        probability = 0.0 if call is None else call
        label, positive = self._label(probability)
        view, view_probability = answer if answer is not None else (None, None)
        return DetectionResult(
            bbox=found.bbox,
            centroid_yx=found.centroid_yx,
            area=found.area,
            cluster=found.cluster,
            probability=probability,
            label=label,
            positive=positive and call is not None,
            track=track.number,
            view=None if view is None else view.view,
            view_probability=view_probability,
            view_label=None if view_probability is None else self._label(view_probability)[0],
            orientation=0 if view is None else view.orientation,
        )

    def _close(self, track: Track, end: str) -> ClosedCell:
        call = self.views.forget(track.number)
        probability = None if call is None else call.probability
        found = track.detection
        return ClosedCell(
            track=track.number,
            field=track.field,
            first_seen_at=track.first_seen_at,
            last_seen_at=track.last_seen_at,
            frames_seen=track.frames_seen,
            views=0 if call is None else call.views,
            probability=probability,
            label=None if probability is None else self._label(probability)[0],
            cluster=found.cluster,
            area=found.area,
            centroid_yx=found.centroid_yx,
            reclassified=0 if call is None else call.reclassified,
            end=end,
            positive=probability is not None and self._label(probability)[1],
        )

    def whole_window(self, pixels: np.ndarray) -> Detection:
        """Mode "whole": the fixed central window is the one cell (a flow channel presents one at
        a time). When the model was trained on masked crops, the cell is masked by what
        detection finds inside the window; with nothing found, the window goes in unmasked."""
        height, width = pixels.shape
        side = self.whole_window_px
        top, left = (height - side) // 2, (width - side) // 2
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, height), min(left + side, width)
        centre = ((height - 1) / 2, (width - 1) / 2)
        crop = pixels[y0:y1, x0:x1]
        found = detect(crop, DetectSettings(**{**self.settings.__dict__, "skip_border": False}))
        if not found or not self.spec.masked_background:
            mask = np.ones(crop.shape, dtype=bool)
            return Detection((y0, x0, y1, x1), centre, int(mask.size), mask, cluster=len(found) > 1, cores=1)
        mask = np.zeros(crop.shape, dtype=bool)
        for item in found:
            oy, ox = item.origin_yx
            mask[oy : oy + item.mask.shape[0], ox : ox + item.mask.shape[1]] |= item.mask
        cluster = len(found) > 1 or any(item.cluster for item in found)
        return Detection((y0, x0, y1, x1), centre, int(mask.sum()), mask, cluster=cluster, cores=len(found))
