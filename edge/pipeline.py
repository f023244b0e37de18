"""One frame in, one FrameResult out: find the cells, cut each one's model input, classify all
of them in one batched call, and time every stage.

Model input comes only from edge.preprocess (the functions training uses), with the window
rescaled when the rig's pixel size differs from the model's training scale.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from edge.config import Config
from edge.detect import Detection, DetectSettings, detect
from edge.model import Classifier
from edge.preprocess import model_input
from edge.sources.base import Frame

STAGES = ("capture_wait", "detect", "preprocess", "infer", "store", "total")

# pipeline.budget_ms = 0 (the default) derives the budget from the model: this many cells at
# the card's Raspberry Pi 4 estimate per cell, plus detection, preprocessing and storage (about
# 4x this project's x86 dev VM figure for a 20-cell frame, 12 ms), never below the floor.
BUDGET_CELLS = 20
BUDGET_FRAME_OVERHEAD_MS = 50.0
BUDGET_FLOOR_MS = 100.0


def budget_ms(configured_ms: float, classifier: Classifier) -> float:
    """The per-frame latency budget: the configured one, or (0) one that follows the model."""
    if configured_ms > 0:
        return configured_ms
    per_cell = (classifier.card.extra.get("speed") or {}).get("pi4_estimate_ms_per_cell")
    if not isinstance(per_cell, (int, float)) or per_cell <= 0:
        return BUDGET_FLOOR_MS
    estimate = BUDGET_CELLS * per_cell + BUDGET_FRAME_OVERHEAD_MS
    return max(BUDGET_FLOOR_MS, 10.0 * math.ceil(estimate / 10.0))


@dataclass(frozen=True)
class CellResult:
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1
    centroid_yx: tuple[float, float]
    area: int
    cluster: bool
    probability: float
    label: str
    positive: bool


@dataclass
class FrameResult:
    frame: Frame
    cells: list[CellResult]
    timings_ms: dict[str, float] = field(default_factory=dict)
    over_budget: bool = False

    @property
    def positives(self) -> int:
        return sum(cell.positive for cell in self.cells)

    @property
    def clusters(self) -> int:
        return sum(cell.cluster for cell in self.cells)


class Pipeline:
    def __init__(self, classifier: Classifier, config: Config):
        self.classifier = classifier
        self.spec = classifier.input_spec
        self.mode = config.pipeline.mode
        self.settings: DetectSettings = config.detect.settings()
        rig_pixel_size = config.pipeline.pixel_size_um or None
        self.window_px = self.spec.window_for(rig_pixel_size)
        self.whole_window_px = config.pipeline.whole_window_px or self.window_px
        self.threshold = config.model.threshold or classifier.threshold
        self.budget_ms = budget_ms(config.pipeline.budget_ms, classifier)
        self._positive = classifier.positive_label
        self._negative = classifier.card.negative_label

    def process(self, frame: Frame) -> FrameResult:
        """Detect, preprocess and classify; ``timings_ms`` gets detect, preprocess and infer."""
        started = time.perf_counter()
        whole = self.mode == "whole"
        detections = [self.whole_window(frame.pixels)] if whole else detect(frame.pixels, self.settings)
        detected = time.perf_counter()
        batch = np.empty((len(detections), self.spec.size, self.spec.size), dtype=np.uint8)
        for row, found in enumerate(detections):
            batch[row] = model_input(
                frame.pixels, found.centroid_yx, self.spec, found.mask, found.origin_yx, self.window_px
            )
        prepared = time.perf_counter()
        probabilities = self.classifier.predict(batch) if len(batch) else np.zeros(0, dtype=np.float32)
        inferred = time.perf_counter()
        cells = []
        for found, probability in zip(detections, probabilities.tolist(), strict=True):
            positive = probability >= self.threshold
            cells.append(
                CellResult(
                    bbox=found.bbox,
                    centroid_yx=found.centroid_yx,
                    area=found.area,
                    cluster=found.cluster,
                    probability=probability,
                    label=self._positive if positive else self._negative,
                    positive=positive,
                )
            )
        return FrameResult(
            frame=frame,
            cells=cells,
            timings_ms={
                "detect": (detected - started) * 1000.0,
                "preprocess": (prepared - detected) * 1000.0,
                "infer": (inferred - prepared) * 1000.0,
            },
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
