"""Follow each cell across frames: which of this frame's detections is which live track.

A microscope field is usually still for seconds to hours, so the same cell is detected in frame
after frame, a pixel or so from where it was. Each frame's detections are matched to the live
tracks by one assignment (scipy's linear_sum_assignment, so two neighbours never trade places
the way greedy nearest-first matching can): the cost of a pair is the centroid distance (as a
fraction of ``max_match_px``) plus the part of the two masks that does not overlap (1 - IoU);
a pair further apart than ``max_match_px`` never matches. A detection left over starts a track;
a track left unmatched ``lost_after_frames`` frames in a row ends (the cell left, died, or was
lost by detection that long). A frame that matches almost nothing (fewer than
``new_field_fraction`` of what it could match) is a stage move: every track ends and the frame's
detections start the next field.

Pure: detections in, tracks out; nothing here classifies, stores or reads the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.cells.detect import Detection

# A field change needs this many cells on both sides: with one or two cells, "matches almost
# nothing" is as likely a cell leaving as the stage moving (their tracks then simply end).
MIN_CELLS_FOR_NEW_FIELD = 3
_NO_MATCH = 1e9  # cost of a pair that must not match


@dataclass
class Track:
    """One cell followed across frames. ``number`` counts a run's tracks from 1; ``field`` its
    stage positions from 0."""

    number: int
    field: int
    detection: Detection  # where it was last seen
    first_seen_at: float
    last_seen_at: float
    frames_seen: int = 1
    missed: int = 0  # frames in a row it was not matched in

    def see(self, detection: Detection, seen_at: float) -> None:
        self.detection, self.last_seen_at = detection, seen_at
        self.frames_seen += 1
        self.missed = 0


@dataclass
class TrackUpdate:
    """What one frame did to the tracks."""

    tracks: list[Track]  # the track of each detection, in the detections' order
    started: list[Track] = field(default_factory=list)  # tracks this frame began
    ended: list[Track] = field(default_factory=list)  # tracks this frame ended (lost, or the field changed)
    new_field: bool = False


def mask_iou(a: Detection, b: Detection) -> float:
    """Intersection over union of two detections' masks (each bbox-local) in frame pixels."""
    y0, x0 = max(a.bbox[0], b.bbox[0]), max(a.bbox[1], b.bbox[1])
    y1, x1 = min(a.bbox[2], b.bbox[2]), min(a.bbox[3], b.bbox[3])
    if y0 >= y1 or x0 >= x1:
        return 0.0
    part_a = a.mask[y0 - a.bbox[0] : y1 - a.bbox[0], x0 - a.bbox[1] : x1 - a.bbox[1]]
    part_b = b.mask[y0 - b.bbox[0] : y1 - b.bbox[0], x0 - b.bbox[1] : x1 - b.bbox[1]]
    inter = int(np.count_nonzero(part_a & part_b))
    union = int(np.count_nonzero(a.mask)) + int(np.count_nonzero(b.mask)) - inter
    return inter / union if union else 0.0


class Tracker:
    def __init__(self, max_match_px: float, lost_after_frames: int, new_field_fraction: float):
        if max_match_px <= 0 or lost_after_frames < 1 or not 0.0 <= new_field_fraction <= 1.0:
            raise ValueError(
                f"tracker settings out of range: max_match_px {max_match_px}, lost_after_frames "
                f"{lost_after_frames}, new_field_fraction {new_field_fraction}"
            )
        self.max_match_px = max_match_px
        self.lost_after_frames = lost_after_frames
        self.new_field_fraction = new_field_fraction
        self.live: list[Track] = []
        self.field = 0
        self.started = 0  # tracks begun so far (the last number given)

    def update(self, detections: Sequence[Detection], seen_at: float) -> TrackUpdate:
        """Match one frame's detections to the live tracks; start, continue and end tracks."""
        pairs = self._match(detections)
        recent = sum(track.missed == 0 for track in self.live)
        possible = min(recent, len(detections))  # the most this frame could have matched
        if possible >= MIN_CELLS_FOR_NEW_FIELD and len(pairs) < self.new_field_fraction * possible:
            ended = self.live
            self.field += 1
            self.live = [self._start(detection, seen_at) for detection in detections]
            return TrackUpdate(tracks=list(self.live), started=list(self.live), ended=ended, new_field=True)
        tracks: list[Track | None] = [None] * len(detections)
        matched = set()
        for track_index, detection_index in pairs:
            track = self.live[track_index]
            track.see(detections[detection_index], seen_at)
            tracks[detection_index] = track
            matched.add(track_index)
        ended = []
        for index, track in enumerate(self.live):
            if index not in matched:
                track.missed += 1
                if track.missed >= self.lost_after_frames:
                    ended.append(track)
        started = []
        for index, track in enumerate(tracks):
            if track is None:
                tracks[index] = track = self._start(detections[index], seen_at)
                started.append(track)
        gone = {id(track) for track in ended}
        self.live = [track for track in self.live if id(track) not in gone] + started
        return TrackUpdate(tracks=tracks, started=started, ended=ended)  # type: ignore[arg-type]

    def end_all(self) -> list[Track]:
        """End every live track (the run stops); returns them."""
        ended, self.live = self.live, []
        return ended

    def _start(self, detection: Detection, seen_at: float) -> Track:
        self.started += 1
        return Track(self.started, self.field, detection, seen_at, seen_at)

    def _match(self, detections: Sequence[Detection]) -> list[tuple[int, int]]:
        """(live track index, detection index) of each match."""
        if not self.live or not detections:
            return []
        previous = np.array([track.detection.centroid_yx for track in self.live], dtype=np.float64)
        current = np.array([detection.centroid_yx for detection in detections], dtype=np.float64)
        distance = np.linalg.norm(previous[:, None, :] - current[None, :, :], axis=2)
        cost = np.full(distance.shape, _NO_MATCH)
        for row, column in zip(*np.nonzero(distance <= self.max_match_px), strict=True):
            overlap = mask_iou(self.live[row].detection, detections[column])
            cost[row, column] = distance[row, column] / self.max_match_px + (1.0 - overlap)
        rows, columns = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, columns, strict=True) if cost[r, c] < _NO_MATCH]
