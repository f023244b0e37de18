"""`metascope bench clusters`: what detection makes of composed single cells and touching pairs,
scored against the composer's truth, per culture condition (JSON out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import SHARED_DATA
from PIL import Image
from test_composed import synthetic_crops

from edge.capture.composed import ComposeSettings, compose_fields
from edge.capture.synthetic_cells import synthetic_crop
from edge.cells.cluster_truth import FLAGGED, MISSED, SINGLE, SPLIT, judged, outcomes
from edge.cells.detect import Detection
from edge.cli import main


def crops_folder(root: Path, conditions: tuple[str, ...] = ("10kD1", "20kD2"), per_condition: int = 8) -> Path:
    rng = np.random.default_rng(5)
    for label in ("A", "B"):
        for condition in conditions:
            folder = root / label / f"{label}_{condition}"
            folder.mkdir(parents=True)
            for index in range(per_condition // 2):
                image = synthetic_crop(rng, ("round", "spindle")[index % 2], canvas=160)
                Image.fromarray(image).save(folder / f"{index}.png")
    return root


def detection_of(mask: np.ndarray, top: int, left: int, cluster: bool) -> Detection:
    ys, xs = np.nonzero(mask)
    bbox = (top + int(ys.min()), left + int(xs.min()), top + int(ys.max()) + 1, left + int(xs.max()) + 1)
    local = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    centre = (top + float(ys.mean()), left + float(xs.mean()))
    return Detection(bbox, centre, int(local.sum()), local, cluster, 1)


def test_a_pair_is_split_flagged_or_missed_as_its_detections_say() -> None:
    settings = ComposeSettings(width=400, height=300, per_frame=1, pair_fraction=1.0)
    pair = next(compose_fields(synthetic_crops(2), settings)).objects[0]
    assert pair.kind == "pair"
    shape = (settings.height, settings.width)
    whole = [detection_of(pair.mask, pair.bbox[0], pair.bbox[1], cluster=False)]
    [merged] = outcomes([pair], whole, shape)
    assert judged(merged, whole) == MISSED, "one unflagged detection over both cells"
    flagged = [detection_of(pair.mask, pair.bbox[0], pair.bbox[1], cluster=True)]
    assert judged(outcomes([pair], flagged, shape)[0], flagged) == FLAGGED
    apart = [detection_of(m.mask, m.bbox[0], m.bbox[1], cluster=False) for m in pair.members]
    assert judged(outcomes([pair], apart, shape)[0], apart) == SPLIT, "each cell its own detection"


def test_a_single_cell_is_single_flagged_or_split() -> None:
    settings = ComposeSettings(width=400, height=300, per_frame=1)
    cell = next(compose_fields(synthetic_crops(1), settings)).objects[0]
    shape = (settings.height, settings.width)
    one = [detection_of(cell.mask, cell.bbox[0], cell.bbox[1], cluster=False)]
    assert judged(outcomes([cell], one, shape)[0], one) == SINGLE
    flagged = [detection_of(cell.mask, cell.bbox[0], cell.bbox[1], cluster=True)]
    assert judged(outcomes([cell], flagged, shape)[0], flagged) == FLAGGED
    half = cell.mask.shape[0] // 2
    top, bottom = cell.mask.copy(), cell.mask.copy()
    top[half:], bottom[:half] = False, False
    pieces = [
        detection_of(top, cell.bbox[0], cell.bbox[1], False),
        detection_of(bottom, cell.bbox[0], cell.bbox[1], False),
    ]
    assert judged(outcomes([cell], pieces, shape)[0], pieces) == SPLIT, "one cell counted twice"


def test_bench_clusters_scores_every_sampled_crop_per_condition(tmp_path: Path, capsys) -> None:
    data = crops_folder(tmp_path / "crops")
    out = tmp_path / "clusters.json"
    args = ["bench", "clusters", "--data", str(data), "--group-by", r"(\d+kD\d)", "--per-condition", "6"]
    assert main([*args, "--out", str(out)]) == 0
    assert "singles flagged" in capsys.readouterr().err
    result = json.loads(out.read_text())
    assert set(result["conditions"]) == {"10kD1", "20kD2"}, "conditions pooled across the label folders"
    for condition in result["conditions"].values():
        assert condition["sampled"] == 6
        for rule in result["rules"]:
            singles, clusters = condition[rule]["singles"], condition[rule]["clusters"]
            assert singles["objects"] == 6, "each sampled crop once as a single cell"
            assert 2 <= clusters["objects"] <= 3, "and once more in touching pairs and triples"
            assert 0.0 <= singles["flagged_share"] <= 1.0
    for figures in result["summary"].values():
        assert figures["singles_wrong_worst"] >= figures["singles_wrong_mean"] - 1e-9


def test_bench_clusters_without_data_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["bench", "clusters"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["bench", "clusters", "--data", str(tmp_path), "--group-by", "("]) == 2
    assert "--group-by" in capsys.readouterr().err


def test_bench_clusters_on_the_shared_crops(tmp_path: Path, capsys) -> None:
    data = SHARED_DATA / "fayyaz-mda231-pc3"
    if not data.is_dir():
        import pytest

        pytest.skip("needs ../shared/data/fayyaz-mda231-pc3 (the shared crops)")
    out = tmp_path / "clusters.json"
    assert main(["bench", "clusters", "--data", str(data), "--group-by", r"(\d+kD\d)", "--per-condition", "4",
                 "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert len(result["conditions"]) == 7 and result["crops"] == 1306
