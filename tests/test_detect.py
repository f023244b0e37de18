"""edge.cells.detect on synthetic frames with known cells, and on real cell crops composed into frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from edge.capture.images import read_grayscale
from edge.capture.synthetic import render_frame
from edge.cells.detect import DetectSettings, detect, fill_holes, solidity

SHARED = SHARED_DATA.parent  # data/ and tools/


def match(truth_centres: list[tuple[float, float]], found_centres: list[tuple[float, float]], within: float):
    """Greedy nearest matching: {truth index: found index} for pairs closer than ``within``."""
    pairs = sorted(
        (float(np.hypot(t[0] - f[0], t[1] - f[1])), i, j)
        for i, t in enumerate(truth_centres)
        for j, f in enumerate(found_centres)
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for distance, i, j in pairs:
        if distance <= within and i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


@pytest.mark.parametrize("cells", [20, 100])
def test_finds_every_drawn_object_at_its_position(cells: int) -> None:
    rng = np.random.default_rng(11)
    for _ in range(4):
        frame, truth = render_frame(rng, cells=cells)
        found = detect(frame)
        assert len(found) == len(truth)
        matched = match([t.centroid_yx for t in truth], [f.centroid_yx for f in found], within=3.0)
        assert len(matched) == len(truth), "every drawn object has a detection within 3 px of its centroid"
        for i, j in matched.items():
            y0, x0, y1, x1 = truth[i].bbox
            fy0, fx0, fy1, fx1 = found[j].bbox
            assert max(abs(y0 - fy0), abs(x0 - fx0), abs(y1 - fy1), abs(x1 - fx1)) <= 4
            assert found[j].mask.shape == (fy1 - fy0, fx1 - fx0)
            assert found[j].area == int(found[j].mask.sum())


def test_the_shape_rule_flags_touching_synthetic_cells_as_clusters() -> None:
    """The older rule on synthetic cells (the learnt one, on composed real crops: test_cluster_rule.py)."""
    rng = np.random.default_rng(5)
    agree = total = true_clusters = caught = 0
    for _ in range(12):
        frame, truth = render_frame(rng, cells=20, cluster_fraction=0.4)
        found = detect(frame, DetectSettings(cluster_rule="shape"))
        for i, j in match([t.centroid_yx for t in truth], [f.centroid_yx for f in found], within=3.0).items():
            total += 1
            agree += truth[i].cluster == found[j].cluster
            true_clusters += truth[i].cluster
            caught += truth[i].cluster and found[j].cluster
    assert true_clusters >= 15, "the synthetic frames must hold clusters for this test to mean anything"
    assert agree / total >= 0.95
    assert caught / true_clusters >= 0.75


def test_large_objects_are_clusters_whatever_their_shape() -> None:
    frame, _ = render_frame(np.random.default_rng(2), cells=10, cluster_fraction=0.0)
    found = detect(frame, DetectSettings(cluster_area_px=10))
    assert found and all(f.cluster for f in found)


def test_blank_and_noise_frames_have_no_cells() -> None:
    assert detect(np.full((240, 320), 110, dtype=np.uint8)) == []
    noise = np.clip(np.random.default_rng(0).normal(110, 2.5, (480, 640)), 0, 255).astype(np.uint8)
    assert detect(noise) == []


def test_cells_cut_by_the_frame_edge_are_skipped_unless_asked() -> None:
    frame, truth = render_frame(np.random.default_rng(3), cells=8)
    y0, x0, y1, x1 = truth[0].bbox
    shifted = np.roll(frame, (-y0 - (y1 - y0) // 2, -x0 - (x1 - x0) // 2), axis=(0, 1))  # cell 0 at the corner
    kept = detect(shifted, DetectSettings(skip_border=False))
    skipped = detect(shifted)
    assert len(kept) > len(skipped)
    assert all(f.bbox[0] > 0 and f.bbox[1] > 0 for f in skipped)


def test_size_filters() -> None:
    frame, _ = render_frame(np.random.default_rng(4), cells=12, cluster_fraction=0.0)
    areas = sorted(f.area for f in detect(frame))
    middle = areas[len(areas) // 2]
    small_only = detect(frame, DetectSettings(max_area_px=middle, min_area_px=1))
    assert all(f.area <= middle for f in small_only) and len(small_only) < len(areas)


def test_fill_holes_and_solidity() -> None:
    ring = np.zeros((20, 20), dtype=bool)
    ring[5:15, 5:15] = True
    ring[8:12, 8:12] = False
    assert fill_holes(ring)[5:15, 5:15].all()
    disc = np.hypot(*np.mgrid[-10:11, -10:11]) <= 9
    assert solidity(disc) > 0.9
    dumbbell = np.zeros((21, 41), dtype=bool)
    dumbbell[:, :21] |= disc
    dumbbell[:, 20:] |= disc
    assert solidity(dumbbell) < 0.88


def test_real_cells_composed_into_frames(tmp_path: Path) -> None:
    """Detection on real phase-contrast appearance: real masked crops pasted on a background."""
    crops = SHARED / "data" / "fayyaz-mda231-pc3"
    tool = SHARED / "tools" / "compose_frames.py"
    if not crops.is_dir() or not tool.is_file():
        pytest.skip(f"real cell crops not available ({crops} or {tool} missing)")
    subprocess.run(
        [sys.executable, str(tool), str(crops), str(tmp_path), "--frames", "6", "--size", "1024x768", "--seed", "3"],
        check=True,
        capture_output=True,
    )
    truth = json.loads((tmp_path / "truth.json").read_text())
    total = found_total = 0
    for entry in truth:
        gray = read_grayscale(tmp_path / entry["frame"])
        found = detect(gray, DetectSettings(skip_border=False))
        centres = [((c["bbox"][1] + c["bbox"][3]) / 2, (c["bbox"][0] + c["bbox"][2]) / 2) for c in entry["cells"]]
        # A real cell's centroid can sit well off its bbox centre (irregular shapes): match loosely,
        # then require the detection's bbox to overlap the true one.
        matched = match(centres, [f.centroid_yx for f in found], within=40.0)
        for i, j in matched.items():
            x0, y0, x1, y1 = entry["cells"][i]["bbox"]
            fy0, fx0, fy1, fx1 = found[j].bbox
            assert fx0 < x1 and x0 < fx1 and fy0 < y1 and y0 < fy1
        total += len(centres)
        found_total += len(matched)
    assert found_total / total >= 0.9, f"found {found_total} of {total} real cells"
