"""Frames composed from masked single-cell crops: every crop placed once, exact truth, touching
pairs and triples, a still field repeated with noise and jitter, and cells the Pi's detector finds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from edge.capture.base import EndOfSource
from edge.capture.composed import (
    ComposedSource,
    ComposeSettings,
    Crop,
    background_estimate,
    compose_fields,
    decode_mask,
    load_crops,
    on_background,
    render,
    write_frames,
)
from edge.capture.synthetic_cells import synthetic_crop
from edge.cells.detect import detect


def synthetic_crops(count: int, seed: int = 0) -> list[Crop]:
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        label = ("round", "spindle")[index % 2]
        crop = Crop.from_image(synthetic_crop(rng, label, canvas=160), label, f"{label}/cell_{index:03d}.png")
        assert crop is not None
        crops.append(crop)
    return crops


def members_of(fields) -> list[str]:
    return [member.source for field in fields for obj in field.objects for member in obj.members]


@pytest.mark.parametrize("pairs, triples", [(0.0, 0.0), (0.3, 0.2)])
def test_every_crop_is_placed_exactly_once(pairs: float, triples: float) -> None:
    crops = synthetic_crops(30)
    fields = list(compose_fields(crops, ComposeSettings(width=640, height=480, pair_fraction=pairs,
                                                        triple_fraction=triples)))  # fmt: skip
    assert sorted(members_of(fields)) == sorted(crop.source for crop in crops)


def test_truth_masks_show_the_crops_own_pixels_at_their_boxes() -> None:
    crops = {crop.source: crop for crop in synthetic_crops(12)}
    settings = ComposeSettings(width=640, height=480, pair_fraction=0.5)
    for field in compose_fields(list(crops.values()), settings):
        for obj in field.objects:
            y0, x0 = obj.bbox[:2]
            union = np.zeros(obj.mask.shape, dtype=bool)
            for member in obj.members:
                crop = crops[member.source]
                my0, mx0, my1, mx1 = member.bbox
                assert (my1 - my0, mx1 - mx0) == crop.mask.shape
                shown = field.canvas[my0:my1, mx0:mx1][member.mask]
                assert np.array_equal(shown, crop.pixels[member.mask].astype(np.float32)), "pixels are the crop's"
                assert not (member.mask & ~crop.mask).any()
                union[my0 - y0 : my1 - y0, mx0 - x0 : mx1 - x0] |= crop.mask
            assert np.array_equal(union, obj.mask)
            assert obj.label == (obj.members[0].label if len(set(obj.labels)) == 1 else "mixed")


def test_pairs_and_triples_touch_and_singles_keep_apart() -> None:
    from scipy import ndimage

    settings = ComposeSettings(width=800, height=600, pair_fraction=0.4, triple_fraction=0.3, gap_px=25)
    fields = list(compose_fields(synthetic_crops(40, seed=2), settings))
    kinds = [obj.kind for field in fields for obj in field.objects]
    assert {"single", "pair", "triple"} <= set(kinds)
    for field in fields:
        for obj in field.objects:
            assert len(obj.members) == {"single": 1, "pair": 2, "triple": 3}[obj.kind]
            assert obj.cluster == (obj.kind != "single")
            assert ndimage.label(obj.mask, structure=np.ones((3, 3)))[1] == 1, "a cluster's cells touch"
        boxes = [obj.bbox for obj in field.objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                apart = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
                assert apart >= settings.gap_px


def test_a_field_is_shown_repeats_times_with_fresh_noise_then_the_next_field() -> None:
    source = ComposedSource(synthetic_crops(10), ComposeSettings(width=480, height=360, per_frame=4, repeats=3))
    source.open()
    frames = [source.next_frame(1.0) for _ in range(6)]
    assert frames[0].truth is frames[2].truth and frames[3].truth is not frames[0].truth
    assert not np.array_equal(frames[0].pixels, frames[1].pixels), "each frame has its own sensor noise"
    assert np.abs(frames[0].pixels.astype(int) - frames[1].pixels.astype(int)).mean() < 6
    assert [source.field_of(f.index) for f in frames] == [0, 0, 0, 1, 1, 1]
    with pytest.raises(EndOfSource):
        for _ in range(100):
            source.next_frame(1.0)


def test_the_detector_finds_each_single_cell_of_a_composed_frame() -> None:
    crops = synthetic_crops(16, seed=4)
    field = next(compose_fields(crops, ComposeSettings(width=800, height=600, per_frame=16)))
    found = detect(render(field.canvas, field.noise_sigma, np.random.default_rng(0), 0.3))
    assert len(found) == len(field.objects)
    for obj in field.objects:
        cy, cx = obj.centroid_yx
        assert min(np.hypot(d.centroid_yx[0] - cy, d.centroid_yx[1] - cx) for d in found) < 3.0


def test_the_background_is_estimated_from_the_crops_flat_pixels() -> None:
    rng = np.random.default_rng(1)
    pixels = np.clip(np.rint(rng.normal(118.0, 2.0, (80, 80))), 1, 255).astype(np.uint8)
    pixels[30:50, 30:50] = rng.integers(40, 200, (20, 20))  # a textured body in a flat, kept surround
    level, noise = background_estimate(pixels, np.ones(pixels.shape, dtype=bool))
    assert abs(level - 118.0) < 1.5
    assert 1.4 < noise < 2.8


def test_a_crop_on_its_own_background_is_segmented_like_a_frame_cell() -> None:
    from edge.classify.preprocess import SEGMENTED, InputSpec, crop_cell

    crop = synthetic_crops(1)[0]
    image = on_background(crop, np.random.default_rng(0))
    cell = crop_cell(image, InputSpec(size=48, window_px=96))
    assert cell.kind == SEGMENTED
    assert abs(cell.area_px - crop.area) < 0.2 * crop.area


def test_written_frames_replay_with_their_truth(tmp_path) -> None:
    from edge.capture.replay import ReplaySource

    source = ComposedSource(synthetic_crops(6), ComposeSettings(width=320, height=240, per_frame=3, repeats=2))
    dest = write_frames(tmp_path / "frames", source)
    truth = json.loads((dest / "truth.json").read_text())
    assert [len(f["frames"]) for f in truth["fields"]] == [2, 2]
    obj = truth["fields"][0]["objects"][0]
    y0, x0, y1, x1 = obj["bbox"]
    assert decode_mask(obj["mask_rle"], (y1 - y0, x1 - x0)).sum() == obj["area"]
    replay = ReplaySource(str(dest))
    replay.open()
    first = replay.next_frame(1.0)
    assert first.pixels.shape == (240, 320)
    assert np.array_equal(first.pixels, np.asarray(Image.open(dest / truth["fields"][0]["frames"][0])))


def test_crops_in_label_folders_get_their_label(tmp_path) -> None:
    for crop, label in zip(synthetic_crops(4), ("A", "A", "B", "B"), strict=True):
        folder = tmp_path / label / "culture1"
        folder.mkdir(parents=True, exist_ok=True)
        image = np.zeros((100, 100), dtype=np.uint8)
        image[: crop.pixels.shape[0], : crop.pixels.shape[1]][crop.mask] = crop.pixels[crop.mask]
        Image.fromarray(image).save(folder / f"{len(list(folder.iterdir()))}.png")
    assert sorted(crop.label for crop in load_crops(tmp_path)) == ["A", "A", "B", "B"]


@pytest.mark.skipif(not (SHARED_DATA / "fayyaz-mda231-pc3").is_dir(), reason="needs ../shared/data (the shared crops)")
def test_real_crops_compose_into_frames_whose_single_cells_are_found() -> None:
    folder = SHARED_DATA / "fayyaz-mda231-pc3" / "PC3" / "PC3_40kD1"
    crops = load_crops(folder)[:24]
    found = total = 0
    for field in compose_fields(crops, ComposeSettings()):
        detections = detect(render(field.canvas, field.noise_sigma, np.random.default_rng(0), 0.3))
        for obj in field.objects:
            total += 1
            cy, cx = (round(v) for v in obj.centroid_yx)
            found += any(d.bbox[0] <= cy < d.bbox[2] and d.bbox[1] <= cx < d.bbox[3] for d in detections)
    assert found >= 0.9 * total


def crop_folder(tmp_path, count: int = 8):
    for index, crop in enumerate(synthetic_crops(count)):
        folder = tmp_path / "crops" / crop.label / "culture1"
        folder.mkdir(parents=True, exist_ok=True)
        image = np.zeros((120, 120), dtype=np.uint8)
        image[: crop.pixels.shape[0], : crop.pixels.shape[1]][crop.mask] = crop.pixels[crop.mask]
        Image.fromarray(image).save(folder / f"{index}.png")
    return tmp_path / "crops"


def test_the_service_runs_on_composed_frames_and_counts_each_cell_once(tmp_path, tiny_model) -> None:
    import sqlite3
    import subprocess
    import sys

    from conftest import REPO

    crops = crop_folder(tmp_path)
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--source", f"composed:{crops}", "--model", str(tiny_model[0]),
         "--state-dir", str(state)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(state / "metascope.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        cells_table = "cells" if "views" in tables else "tracks"
        assert db.execute(f"select count(*) from {cells_table}").fetchone()[0] == 8, "8 crops: 8 cells, each once"


def test_bench_pipeline_runs_on_composed_crops(tmp_path, tiny_model) -> None:
    from edge.classify.classifier import Classifier
    from edge.commands.benchmarks import bench_pipeline

    result = bench_pipeline(Classifier.load(tiny_model[0]), cells=4, frames=30, warmup=5, field="composed",
                            move_every=10, crops=str(crop_folder(tmp_path)))  # fmt: skip
    assert result["field"] == "composed" and result["exit_code"] == 0
    assert result["cells_per_frame"]["max"] <= 4
