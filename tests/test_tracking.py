"""The tracker: the same cell keeps its track through jitter, new cells start tracks, lost ones end
after lost_after_frames, and a stage move starts a new field."""

from __future__ import annotations

import numpy as np
import pytest

from edge.cells.detect import Detection
from edge.cells.tracking import Tracker, mask_iou


def disc(y: float, x: float, radius: float = 6.0) -> Detection:
    """A round detection centred at (y, x)."""
    top, left = int(np.floor(y - radius)), int(np.floor(x - radius))
    side = int(np.ceil(2 * radius)) + 2
    yy, xx = np.mgrid[top : top + side, left : left + side]
    mask = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
    return Detection((top, left, top + side, left + side), (y, x), int(mask.sum()), mask, cluster=False, cores=1)


def grid(count: int, offset: tuple[float, float] = (0.0, 0.0)) -> list[Detection]:
    return [disc(40.0 + 50 * (i // 5) + offset[0], 40.0 + 50 * (i % 5) + offset[1]) for i in range(count)]


def tracker(lost_after_frames: int = 3) -> Tracker:
    return Tracker(max_match_px=15.0, lost_after_frames=lost_after_frames, new_field_fraction=0.3)


def test_still_cells_keep_their_tracks_through_jitter() -> None:
    follow = tracker()
    first = follow.update(grid(10), 0.0)
    assert [t.number for t in first.tracks] == list(range(1, 11)) and len(first.started) == 10
    rng = np.random.default_rng(0)
    for frame in range(1, 20):
        detections = [disc(d.centroid_yx[0] + rng.normal(0, 0.5), d.centroid_yx[1] + rng.normal(0, 0.5))
                      for d in grid(10)]  # fmt: skip
        update = follow.update(detections, float(frame))
        assert [t.number for t in update.tracks] == list(range(1, 11))
        assert not update.started and not update.ended and not update.new_field
    assert all(t.frames_seen == 20 and t.first_seen_at == 0.0 and t.last_seen_at == 19.0 for t in follow.live)


def test_a_new_cell_starts_a_track_and_a_lost_one_ends_after_lost_after_frames() -> None:
    follow = tracker(lost_after_frames=3)
    follow.update(grid(6), 0.0)
    arrived = follow.update([*grid(6), disc(200.0, 300.0)], 1.0)
    assert [t.number for t in arrived.started] == [7]
    for frame in (2, 3):  # cell 1 missing for 1, then 2 frames: not yet lost
        update = follow.update([*grid(6)[1:], disc(200.0, 300.0)], float(frame))
        assert not update.ended and [t.number for t in update.tracks] == [2, 3, 4, 5, 6, 7]
    update = follow.update([*grid(6)[1:], disc(200.0, 300.0)], 4.0)
    assert [t.number for t in update.ended] == [1] and update.ended[0].last_seen_at == 1.0
    assert sorted(t.number for t in follow.live) == [2, 3, 4, 5, 6, 7]


def test_neighbours_moving_together_are_assigned_as_a_whole_not_greedily() -> None:
    """Greedy nearest-first matching would give the left cell's track to the right cell (4 px
    from it) and then the left cell nothing near: the assignment keeps both."""
    follow = tracker()
    follow.update([disc(50.0, 50.0, 2.0), disc(50.0, 60.0, 2.0)], 0.0)
    update = follow.update([disc(50.0, 56.0, 2.0), disc(50.0, 66.0, 2.0)], 1.0)
    assert [t.number for t in update.tracks] == [1, 2] and not update.started


def test_a_stage_move_ends_every_track_and_starts_a_new_field() -> None:
    follow = tracker()
    follow.update(grid(10), 0.0)
    follow.update(grid(10), 1.0)
    moved = follow.update(grid(10, offset=(25.0, 25.0)), 2.0)
    assert moved.new_field and follow.field == 1
    assert sorted(t.number for t in moved.ended) == list(range(1, 11))
    assert [t.number for t in moved.tracks] == list(range(11, 21)) and all(t.field == 1 for t in moved.tracks)
    assert all(t.field == 0 for t in moved.ended)
    settled = follow.update(grid(10, offset=(25.0, 25.0)), 3.0)
    assert [t.number for t in settled.tracks] == list(range(11, 21)) and not settled.started and not settled.new_field


def test_empty_frames_are_no_stage_move_and_a_field_with_few_cells_never_changes() -> None:
    follow = tracker(lost_after_frames=3)
    follow.update(grid(10), 0.0)
    assert not follow.update([], 1.0).new_field
    assert [t.number for t in follow.update(grid(10), 2.0).tracks] == list(range(1, 11))
    few = tracker()
    few.update(grid(2), 0.0)
    update = few.update(grid(2, offset=(25.0, 25.0)), 1.0)
    assert not update.new_field and len(update.started) == 2 and few.field == 0


def test_end_all_and_settings_checks() -> None:
    follow = tracker()
    follow.update(grid(4), 0.0)
    assert [t.number for t in follow.end_all()] == [1, 2, 3, 4] and follow.live == []
    with pytest.raises(ValueError, match="max_match_px"):
        Tracker(max_match_px=0.0, lost_after_frames=1, new_field_fraction=0.3)


def test_mask_iou() -> None:
    assert mask_iou(disc(50.0, 50.0), disc(50.0, 50.0)) == 1.0
    assert mask_iou(disc(50.0, 50.0), disc(50.0, 80.0)) == 0.0
    assert 0.0 < mask_iou(disc(50.0, 50.0), disc(50.0, 55.0)) < 1.0
