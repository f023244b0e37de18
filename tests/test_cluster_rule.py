"""The learnt cluster rule (issue 19.1): two touching cells are split or flagged, one large cell is
not, and `detect` and `run` tell clusters by the same rule from the same config and model card."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from test_cell_scale import model_with_areas, track_areas
from test_composed import synthetic_crops

from edge.capture.composed import ComposedSource, ComposeSettings, Crop, compose_fields, render, write_frames
from edge.capture.synthetic_cells import synthetic_crop
from edge.cells.cluster_rule import ClusterRule, learn, shipped_rule
from edge.cells.cluster_truth import FLAGGED, SINGLE, SPLIT, judged, outcomes
from edge.cells.detect import COMPACT_PAIR, LEARNT, DetectSettings, detect, inspect
from edge.cli import main


def round_crops(count: int, seed: int = 3, zoom: float = 1.0) -> list[Crop]:
    """Round synthetic cells; ``zoom`` 1.7 brings them to the shared crops' typical size (3,500 px)."""
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        image = synthetic_crop(rng, "round", canvas=160)
        if zoom != 1.0:
            cell = ndimage.zoom((image > 0).astype(np.uint8), zoom, order=0).astype(bool)
            image = np.clip(ndimage.zoom(image.astype(np.float32), zoom, order=1), 1, 255).astype(np.uint8)
            image[~cell] = 0
        crops.append(Crop.from_image(image, "round", f"round/{index}.png"))
    return crops


def typical_area(crops: list[Crop]) -> float:
    return float(np.median([crop.area for crop in crops]))


def composed_outcomes(crops: list[Crop], settings: ComposeSettings, detect_settings: DetectSettings) -> list[str]:
    results = []
    for field in compose_fields(crops, settings):
        frame = render(field.canvas, field.noise_sigma, np.random.default_rng(field.number), 0.3)
        found = detect(frame, detect_settings)
        results += [judged(outcome, found) for outcome in outcomes(field.objects, found, frame.shape)]
    return results


def test_touching_pairs_of_cells_are_split_or_flagged() -> None:
    crops = round_crops(24, zoom=1.7)  # touching by 0 to 4 px
    settings = ComposeSettings(width=800, height=600, per_frame=6, pair_fraction=1.0)
    results = composed_outcomes(crops, settings, DetectSettings(reference_area_px=typical_area(crops)))
    assert len(results) == 12
    assert sum(result in (SPLIT, FLAGGED) for result in results) >= 10, results


def test_single_cells_apart_are_not_flagged_even_when_large() -> None:
    crops = synthetic_crops(24, seed=6)
    reference = typical_area(crops)
    settings = ComposeSettings(width=800, height=600, per_frame=8)
    results = composed_outcomes(crops, settings, DetectSettings(reference_area_px=reference))
    assert results.count(SINGLE) >= 23, results
    # One cell grown to 3x the typical area (1.7x across) is still one cell.
    big = crops[0]
    grown = ndimage.zoom(big.pixels.astype(np.float32), 1.7, order=1)
    mask = ndimage.zoom(big.mask.astype(np.uint8), 1.7, order=0).astype(bool)
    large = Crop(np.clip(grown, 1, 255).astype(np.uint8), mask, big.label, "large.png", big.level, big.noise)
    assert large.area > 2.5 * reference
    [result] = composed_outcomes(
        [large], ComposeSettings(width=400, height=400), DetectSettings(reference_area_px=reference)
    )
    assert result == SINGLE


def test_the_shipped_rule_flags_its_share_of_training_singles_and_reads_back() -> None:
    rule = shipped_rule()
    assert rule.threshold(0.05) < rule.threshold(0.01)
    assert ClusterRule.from_json(rule.to_json()) == rule
    rng = np.random.default_rng(0)
    singles = np.column_stack([rng.normal(0, 0.5, 400), rng.uniform(0.85, 1, 400), rng.uniform(0, 0.5, 400),
                               rng.uniform(0, 0.2, 400), rng.uniform(0, 1, 400)])  # fmt: skip
    pairs = singles[:100] + np.array([0.7, -0.15, 1.0, 0.5, 0.0])
    learnt = learn(np.vstack([singles, pairs]), np.r_[np.zeros(400), np.ones(100)], 3000.0)
    flagged = learnt.scores(singles) > learnt.threshold(0.05)
    assert 0.03 <= flagged.mean() <= 0.07, "the threshold flags the asked share of its training singles"
    assert (learnt.scores(pairs) > learnt.threshold(0.05)).mean() > 0.9


def detect_objects(out: Path) -> list[dict[str, str]]:
    with (out / "objects.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["kept"] == "yes"]


@pytest.mark.parametrize("median", [None, 900.0])
def test_detect_and_run_tell_clusters_alike(model_copy, median, tmp_path: Path, capsys) -> None:
    crops = synthetic_crops(12, seed=8)
    model = model_with_areas(model_copy, median=median)
    settings = ComposeSettings(width=640, height=480, per_frame=6, repeats=1, pair_fraction=0.5)
    frames = write_frames(tmp_path / "frames", ComposedSource(crops, settings))
    out = tmp_path / "detected"
    pngs = sorted(str(path) for path in frames.glob("*.png"))
    assert main(["detect", *pngs, "--out", str(out), "--model", str(model)]) == 0
    detect_rule = re.search(r"^clusters: (.*) \(model ", capsys.readouterr().out, re.MULTILINE).group(1)
    state = tmp_path / "state"
    assert main(["run", "--source", f"replay:{frames}", "--state-dir", str(state), "--model", str(model)]) == 0
    assert f"clusters: {detect_rule}" in capsys.readouterr().err, "the same rule, said the same way"
    from_the_card = "from the model card's training cells" in detect_rule
    assert from_the_card == (median is not None)
    cells = track_areas(state, capsys)
    objects = detect_objects(out)
    assert len(cells) == len(objects) > 0
    by_place = {(round(float(o["centroid_y"])), round(float(o["centroid_x"]))): o["cluster"] == "yes" for o in objects}
    for cell in cells:
        place = min(by_place, key=lambda p: (p[0] - cell["centroid_y"]) ** 2 + (p[1] - cell["centroid_x"]) ** 2)
        assert bool(cell["cluster"]) == by_place[place]
    truth = json.loads((frames / "truth.json").read_text())
    assert sum(len(f["objects"]) for f in truth["fields"]) == len(objects)


def test_a_learnt_cluster_says_why(tmp_path: Path) -> None:
    crops = round_crops(2)
    settings = ComposeSettings(width=400, height=300, per_frame=1, pair_fraction=1.0, max_overlap_px=0)
    field = next(compose_fields(crops, settings))
    found = detect(render(field.canvas, field.noise_sigma, np.random.default_rng(0), 0.3),
                   DetectSettings(reference_area_px=typical_area(crops)))  # fmt: skip
    items = inspect(render(field.canvas, field.noise_sigma, np.random.default_rng(0), 0.3),
                    DetectSettings(reference_area_px=typical_area(crops)))  # fmt: skip
    assert [item.detection.cluster for item in items if not item.rejected] == [d.cluster for d in found]
    clusters = [item for item in items if item.detection.cluster]
    assert clusters, "two round cells touching"
    for item in clusters:
        assert set(item.cluster_reasons) <= {LEARNT, COMPACT_PAIR} and item.cluster_reasons
        assert (LEARNT in item.cluster_reasons) == (item.cluster_score > shipped_rule().threshold(0.05))


def test_the_model_cards_cell_size_is_what_the_learnt_rule_measures_against(model_copy, tmp_path: Path, capsys) -> None:
    frames = write_frames(tmp_path / "frames", ComposedSource(synthetic_crops(8, seed=9), ComposeSettings(
        width=640, height=480, per_frame=8, repeats=1)))  # fmt: skip
    scores = {}
    for median in (100.0, 100_000.0):
        model = model_with_areas(model_copy, median=median)
        out = tmp_path / f"detected-{median:.0f}"
        assert main(["detect", str(frames / "frame_000000.png"), "--out", str(out), "--model", str(model)]) == 0
        scores[median] = [float(row["cluster_score"]) for row in detect_objects(out)]
    capsys.readouterr()
    assert len(scores[100.0]) == 8
    assert all(small > large for small, large in zip(scores[100.0], scores[100_000.0], strict=True)), (
        "the same objects look more like several cells against a small typical cell"
    )
