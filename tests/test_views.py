"""The view scheduler: a new cell at once, more views spaced in time up to K, first views before
owed ones within the budget, and a changed cell classified again; calls averaged as logits."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from test_tracking import disc

from edge.cells.logits import logit, mean_of_logits, sigmoid
from edge.cells.tracking import Track
from edge.cells.views import CHANGE_CONFIRM_FRAMES, DIHEDRAL_ORDER, ViewScheduler, dihedral
from edge.records import CardFacts


def tracks(count: int, radius: float = 6.0) -> list[Track]:
    return [Track(number, 0, disc(40.0, 40.0 + 30 * number, radius), 0.0, 0.0) for number in range(1, count + 1)]


def run(scheduler: ViewScheduler, cells: list[Track], budget: int, probability: float = 0.8) -> list[int]:
    """One frame: plan, record an answer for every view; the track numbers viewed."""
    planned = scheduler.plan(cells, budget)
    for view in planned:
        scheduler.record(view.track, probability)
    return [view.track for view in planned]


def test_a_new_cell_at_once_then_spaced_views_until_it_has_k() -> None:
    scheduler = ViewScheduler(views_per_cell=4, view_interval_frames=2, reclassify_area_change=0.25, orientations=True)
    cells = tracks(3)
    viewed = [run(scheduler, cells, budget=100) for _ in range(12)]
    assert viewed[0] == [1, 2, 3], "every new cell in its first frame"
    assert viewed[1] == [], "the next view waits view_interval_frames"
    assert [len(frame) for frame in viewed] == [3, 0, 3, 0, 3, 0, 3, 0, 0, 0, 0, 0]
    assert all(scheduler.calls[number].views == 4 for number in (1, 2, 3))
    assert scheduler.owed() == 0


def test_the_budget_limits_owed_views_but_never_first_ones_and_nothing_piles_up() -> None:
    scheduler = ViewScheduler(views_per_cell=3, view_interval_frames=1, reclassify_area_change=0.25, orientations=False)
    cells = tracks(6)
    assert run(scheduler, cells, budget=0) == [1, 2, 3, 4, 5, 6], "first views run whatever the budget"
    second = run(scheduler, cells, budget=2)
    third = run(scheduler, cells, budget=2)
    assert len(second) == 2 and len(third) == 2 and not set(second) & set(third), "fewest views first"
    newcomer = [*cells, Track(7, 0, disc(200.0, 200.0), 0.0, 0.0)]
    assert run(scheduler, newcomer, budget=2)[0] == 7, "a new cell goes first"
    assert scheduler.owed() <= 3 * len(newcomer), "what waits is bounded by the live cells"


def test_views_turn_through_the_dihedral_orientations_only_for_a_model_that_learnt_them() -> None:
    turning = ViewScheduler(views_per_cell=8, view_interval_frames=1, reclassify_area_change=0.25, orientations=True)
    fixed = ViewScheduler(views_per_cell=8, view_interval_frames=1, reclassify_area_change=0.25, orientations=False)
    cell = tracks(1)
    orientations, still = [], []
    for _ in range(8):
        orientations += [view.orientation for view in turning.plan(cell, 10)]
        still += [view.orientation for view in fixed.plan(cell, 10)]
        turning.record(1, 0.5)
        fixed.record(1, 0.5)
    assert orientations == list(DIHEDRAL_ORDER) and sorted(orientations) == list(range(8))
    assert still == [0] * 8
    assert CardFacts.from_extra({"training": {"settings": {"augment": {"rotate_any_angle": True}}}}).learnt_orientations
    assert not CardFacts.from_extra({"training": {"data": "synthetic"}}).learnt_orientations
    assert not CardFacts.from_extra({}).learnt_orientations


def test_dihedral_variants_are_the_eight_turns_and_mirror_images() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    variants = [dihedral(image, v) for v in range(8)]
    assert np.array_equal(variants[0], image)
    assert np.array_equal(variants[1], np.rot90(image)) and np.array_equal(variants[4], image[:, ::-1])
    assert len({v.tobytes() + bytes(v.shape) for v in variants}) == 8
    assert all(v.flags.c_contiguous for v in variants)


def test_a_cell_that_changes_area_or_becomes_a_cluster_is_classified_again() -> None:
    scheduler = ViewScheduler(views_per_cell=2, view_interval_frames=1, reclassify_area_change=0.25, orientations=False)
    cell = tracks(1, radius=8.0)
    run(scheduler, cell, 10, probability=0.9)
    run(scheduler, cell, 10, probability=0.9)
    assert run(scheduler, cell, 10) == [] and scheduler.calls[1].views == 2
    cell[0].detection = disc(40.0, 70.0, 7.5)  # about 12 % smaller: within the threshold
    assert run(scheduler, cell, 10) == []
    cell[0].detection = disc(40.0, 70.0, 5.0)  # divided: 60 % smaller, for good
    assert [run(scheduler, cell, 10, probability=0.2) for _ in range(CHANGE_CONFIRM_FRAMES)][-1] == [1]
    call = scheduler.calls[1]
    assert call.views == 1 and call.reclassified == 1 and call.probability == pytest.approx(0.2)


def test_a_one_frame_flicker_of_the_cluster_flag_keeps_the_views() -> None:
    scheduler = ViewScheduler(views_per_cell=1, view_interval_frames=1, reclassify_area_change=0.25, orientations=False)
    cell = tracks(1)
    run(scheduler, cell, 10)
    steady = cell[0].detection
    for _ in range(5):
        cell[0].detection = replace(steady, cluster=True)  # flickers at the edge of the shape test
        assert run(scheduler, cell, 10) == []
        cell[0].detection = steady
        assert run(scheduler, cell, 10) == []
    assert scheduler.calls[1].reclassified == 0


def test_a_call_is_the_mean_of_the_views_logits() -> None:
    scheduler = ViewScheduler(views_per_cell=3, view_interval_frames=1, reclassify_area_change=0.25, orientations=False)
    cell = tracks(1)
    for probability in (0.9, 0.6, 0.2):
        run(scheduler, cell, 10, probability)
    expected = sigmoid((logit(0.9) + logit(0.6) + logit(0.2)) / 3)
    assert scheduler.calls[1].probability == pytest.approx(expected)
    assert mean_of_logits([0.9, 0.6, 0.2]) == pytest.approx(expected)
    assert expected != pytest.approx((0.9 + 0.6 + 0.2) / 3)
    # An int8 answer of exactly 1 is clipped, not an infinite logit that outvotes the rest.
    assert math.isfinite(logit(1.0)) and mean_of_logits([1.0, 0.0]) == pytest.approx(0.5)
    assert scheduler.forget(1) is not None and scheduler.forget(1) is None
