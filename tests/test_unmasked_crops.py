"""Issue 13.1: a cell gets the same call whether it comes as a masked crop, as a plain cut-out on
its real background (unmasked: the Pi's detector and mask are applied to it), or inside a frame
the service replays. Through the public commands: `metascope classify` and `metascope run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.capture.synthetic import add_sensor_noise, render_field
from edge.classify.preprocess import InputSpec
from edge.cli import main

FRAME_HEIGHT, FRAME_WIDTH = 480, 640
MARGIN_PX = 20  # background kept around the cell in an unmasked crop


def write_cells(root: Path, frames: int = 4, cells_per_frame: int = 10, seed: int = 13) -> list[dict]:
    """Frames of single synthetic cells (root/frames), and each cell cut out of its frame twice:
    masked by its true outline (root/masked) and unmasked with its background (root/unmasked)."""
    rng = np.random.default_rng(seed)
    truth = []
    for folder in ("frames", "masked", "unmasked"):
        (root / folder).mkdir(parents=True)
    for number in range(frames):
        canvas, objects = render_field(rng, FRAME_HEIGHT, FRAME_WIDTH, cells_per_frame, cluster_fraction=0.0, scale=1.0)
        frame = add_sensor_noise(rng, canvas)
        Image.fromarray(frame).save(root / "frames" / f"frame_{number:03d}.png")
        for index, found in enumerate(objects):
            y0, x0, y1, x1 = found.bbox
            top, left = max(y0 - MARGIN_PX, 0), max(x0 - MARGIN_PX, 0)
            bottom, right = min(y1 + MARGIN_PX, FRAME_HEIGHT), min(x1 + MARGIN_PX, FRAME_WIDTH)
            crop = frame[top:bottom, left:right]
            inside = np.zeros(crop.shape, dtype=bool)
            inside[y0 - top : y1 - top, x0 - left : x1 - left] = found.mask
            masked = np.where(inside, np.maximum(crop, 1), 0).astype(np.uint8)  # 0 is the masked background
            name = f"f{number:03d}_c{index:02d}.png"
            Image.fromarray(masked).save(root / "masked" / name)
            Image.fromarray(crop).save(root / "unmasked" / name)
            truth.append({"name": name, "frame": number, "centroid_yx": found.centroid_yx})
    return truth


def classify_json(folder: Path, model: Path, capsys) -> dict[str, float]:
    assert main(["classify", str(folder), "--model", str(model), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {Path(row["file"]).name: row["probability"] for row in rows}


def export_rows(state: Path, table: str, capsys) -> list[dict]:
    assert main(["export", "--state-dir", str(state), "--table", table, "--format", "jsonl"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_masked_unmasked_and_in_frame_cells_get_the_same_call(tiny_model, tmp_path: Path, capsys) -> None:
    truth = write_cells(tmp_path)
    model = tiny_model[0]
    masked = classify_json(tmp_path / "masked", model, capsys)
    unmasked = classify_json(tmp_path / "unmasked", model, capsys)

    state = tmp_path / "state"
    args = ["run", "--source", f"replay:{tmp_path / 'frames'}", "--state-dir", str(state), "--model", str(model)]
    assert main(args) == 0
    capsys.readouterr()
    frame_index = {row["id"]: row["frame_index"] for row in export_rows(state, "frames", capsys)}
    views = export_rows(state, "views", capsys)
    in_frame = {}
    for cell in truth:
        candidates = [v for v in views if frame_index[v["frame_id"]] == cell["frame"]]
        y, x = cell["centroid_yx"]
        nearest = min(candidates, key=lambda v: (v["centroid_y"] - y) ** 2 + (v["centroid_x"] - x) ** 2)
        assert (nearest["centroid_y"] - y) ** 2 + (nearest["centroid_x"] - x) ** 2 < 8**2, cell
        in_frame[cell["name"]] = nearest["probability"]

    names = [cell["name"] for cell in truth]
    assert len(names) >= 30 and set(masked) == set(unmasked) == set(names)
    reference = np.array([masked[name] for name in names])
    for other in (unmasked, in_frame):
        probabilities = np.array([other[name] for name in names])
        same_call = np.mean((reference >= 0.5) == (probabilities >= 0.5))
        assert same_call >= 0.9, f"same call for only {same_call:.0%} of {len(names)} cells"
        assert np.median(np.abs(reference - probabilities)) <= 0.05
    # Not a vacuous agreement: the cells are of both kinds and the model tells them apart.
    assert 0.2 < np.mean(reference >= 0.5) < 0.8


def test_an_unmasked_crop_without_a_cell_is_a_named_skip(tiny_model, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "crops"
    folder.mkdir()
    background = add_sensor_noise(np.random.default_rng(2), np.full((120, 120), 110.0, dtype=np.float32))
    Image.fromarray(background).save(folder / "empty_field.png")
    status = main(["classify", str(folder), "--model", str(tiny_model[0])])
    err = capsys.readouterr().err
    assert status == 1
    assert f"skipped {folder / 'empty_field.png'}: unmasked crop in which the detector finds no cell" in err
    assert "0 classified" in err and "1 failed" in err


def test_real_unmasked_brightfield_crops_are_segmented_around_their_cell() -> None:
    """The shared meng-atom crops (unmasked brightfield, 128 px): every one has its cell found,
    a mask that is the cell and not the whole crop, and a black background around it."""
    from conftest import SHARED_DATA

    from edge.capture.images import read_grayscale
    from edge.classify.preprocess import SEGMENTED, InputSpec, crop_cell

    crops = sorted((SHARED_DATA / "meng-atom").glob("*/*.jpg"))
    if not crops:
        pytest.skip(f"shared data not found at {SHARED_DATA / 'meng-atom'} (set METASCOPE_SHARED_DATA)")
    spec = InputSpec(size=96, window_px=192)
    for path in crops:
        gray = read_grayscale(path)
        cell = crop_cell(gray, spec)
        assert cell.kind == SEGMENTED, path
        assert 0.03 * gray.size < cell.area_px < 0.5 * gray.size, path
        # Outside the mask is 0; inside, only the odd pixel that is black in the photograph.
        assert cell.window[0, 0] == 0 and 0.98 * cell.area_px <= np.count_nonzero(cell.window) <= cell.area_px, path


def black_padded(gray: np.ndarray, pad: str) -> np.ndarray:
    """An unmasked crop with black pixels added as a lab's tools add them: a 12 px frame all round,
    12 px on one side (padded to a square), or a few black pixels scattered through it."""
    if pad == "frame":
        return np.pad(gray, 12)
    if pad == "one side":
        return np.pad(gray, ((0, 0), (12, 0)))
    out = gray.copy()
    rng = np.random.default_rng(0)
    out.reshape(-1)[rng.choice(out.size, size=max(12, out.size // 15), replace=False)] = 0
    return out


@pytest.mark.parametrize("pad", ["frame", "one side", "scattered"])
def test_unmasked_crops_with_black_pixels_keep_their_call(tiny_model, tmp_path: Path, capsys, pad: str) -> None:
    """Pre-masked is a black background around the cell reaching the border, not a count of black
    pixels: black padding leaves an unmasked crop unmasked, segmented and called as before."""
    from edge.classify.preprocess import SEGMENTED, crop_cell

    truth = write_cells(tmp_path, frames=2)
    padded = tmp_path / "padded"
    padded.mkdir()
    for cell in truth:
        gray = np.asarray(Image.open(tmp_path / "unmasked" / cell["name"]))
        Image.fromarray(black_padded(gray, pad)).save(padded / cell["name"])
    spec = card_input(tiny_model[0])
    for cell in truth:
        assert crop_cell(np.asarray(Image.open(padded / cell["name"])), spec).kind == SEGMENTED, cell["name"]
    before = classify_json(tmp_path / "unmasked", tiny_model[0], capsys)
    after = classify_json(padded, tiny_model[0], capsys)
    assert set(before) == set(after) and len(before) >= 15
    changed = [name for name in before if (before[name] >= 0.5) != (after[name] >= 0.5)]
    assert not changed, f"{len(changed)} of {len(before)} calls changed by black padding ({pad})"


def test_real_unmasked_crops_padded_with_black_stay_unmasked() -> None:
    """The shared meng-atom crops (unmasked brightfield) with black pixels added are still segmented."""
    from conftest import SHARED_DATA

    from edge.capture.images import read_grayscale
    from edge.classify.preprocess import SEGMENTED, InputSpec, crop_cell, is_premasked

    crops = sorted((SHARED_DATA / "meng-atom").glob("*/*.jpg"))[:10]
    if not crops:
        pytest.skip(f"shared data not found at {SHARED_DATA / 'meng-atom'} (set METASCOPE_SHARED_DATA)")
    spec = InputSpec(size=96, window_px=192)
    for path in crops:
        for pad in ("frame", "one side", "scattered"):
            gray = black_padded(read_grayscale(path), pad)
            assert not is_premasked(gray), (path, pad)
            assert crop_cell(gray, spec).kind == SEGMENTED, (path, pad)


def card_input(model: Path) -> InputSpec:
    from edge.classify.card import ModelCard

    return ModelCard.load(model.with_suffix(".json")).input
