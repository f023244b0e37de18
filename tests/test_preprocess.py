"""edge.classify.preprocess: reading any image as grayscale, and the model-input window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.capture.images import MAX_IMAGE_PIXELS, ImageError, read_grayscale
from edge.capture.synthetic_cells import render_cell
from edge.classify.preprocess import (
    SEGMENTED,
    STANDARD_CELL_MEAN,
    STANDARD_CELL_STD,
    InputSpec,
    UnsegmentableCrop,
    cell_window,
    crop_cell,
    model_input,
    resize_window,
    single_cell_input,
)

RNG = np.random.default_rng(7)
GRADIENT = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))  # 16x64, values 0..252


# ------------------------------------------------------------- reading modes
def test_reads_8bit_gray_exactly(tmp_path: Path) -> None:
    Image.fromarray(GRADIENT).save(tmp_path / "g.png")
    assert np.array_equal(read_grayscale(tmp_path / "g.png"), GRADIENT)


def test_reads_rgb_as_luma(tmp_path: Path) -> None:
    rgb = np.stack([GRADIENT] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.abs(read_grayscale(tmp_path / "rgb.png").astype(int) - GRADIENT).max() <= 1


def test_reads_16bit_scaled_to_8bit(tmp_path: Path) -> None:
    wide = GRADIENT.astype(np.uint16) * 257  # full 16-bit range
    Image.fromarray(wide).save(tmp_path / "w.png")
    gray = read_grayscale(tmp_path / "w.png")
    assert gray.dtype == np.uint8
    assert np.array_equal(gray, GRADIENT)


def test_transparent_pixels_become_masked_background(tmp_path: Path) -> None:
    rgba = np.zeros((16, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[:, 32:, 3] = 255  # right half opaque, left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    gray = read_grayscale(tmp_path / "a.png")
    assert (gray[:, :32] == 0).all()
    assert (gray[:, 32:] == 200).all()


def test_reads_palette_and_float_tiff(tmp_path: Path) -> None:
    Image.fromarray(GRADIENT).convert("P").save(tmp_path / "p.png")
    assert np.abs(read_grayscale(tmp_path / "p.png").astype(int) - GRADIENT).max() <= 4
    Image.fromarray(GRADIENT.astype(np.float32) / 255.0, "F").save(tmp_path / "f.tif")
    assert np.abs(read_grayscale(tmp_path / "f.tif").astype(int) - GRADIENT).max() <= 1


# ------------------------------------------------------------- bad inputs
def _truncated_png(path: Path) -> Path:
    Image.fromarray(RNG.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("not a picture\n"), "not an image"),
        (_truncated_png, "cannot read image"),
        (lambda p: None, "cannot read image"),  # missing file
    ],
    ids=["empty", "text", "truncated", "missing"],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageError, match=reason) as caught:
        read_grayscale(path)
    assert str(path) in str(caught.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")  # tiny file, huge canvas
    assert (tmp_path / "bomb.png").stat().st_size < 2_000_000
    with pytest.raises(ImageError, match="decompression bomb"):
        read_grayscale(tmp_path / "bomb.png")


# ------------------------------------------------------------- model input
def test_window_is_centred_and_zero_padded_at_the_frame_edge() -> None:
    frame = np.full((100, 100), 50, dtype=np.uint8)
    window = cell_window(frame, (5, 50), 40)
    assert window.shape == (40, 40)
    assert (window[:15] == 0).all()  # rows above the frame
    assert (window[15:] == 50).all()


def test_mask_with_origin_zeroes_everything_outside_the_cell() -> None:
    frame = np.full((100, 100), 80, dtype=np.uint8)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:8, 2:8] = True  # a 6x6 cell at frame rows/cols 42..47
    window = cell_window(frame, (45, 45), 20, mask=mask, mask_origin_yx=(40, 40))
    assert np.count_nonzero(window) == 36
    assert (window[7:13, 7:13] == 80).all()


def test_model_input_resizes_to_the_model_side() -> None:
    spec = InputSpec(size=32, window_px=96)
    frame = RNG.integers(1, 255, (200, 300), dtype=np.uint8)
    assert model_input(frame, (100, 150), spec).shape == (32, 32)


def test_window_scales_with_rig_pixel_size() -> None:
    spec = InputSpec(size=64, window_px=192, pixel_size_um=0.65)
    assert spec.window_for(1.3) == 96  # coarser rig: fewer pixels cover the same field
    assert spec.window_for(None) == 192
    assert InputSpec(size=64, window_px=192).window_for(1.3) == 192  # unknown training scale


def test_single_cell_input_does_not_depend_on_where_the_cell_sits() -> None:
    patch, mask = render_cell(np.random.default_rng(3), "spindle")
    cell = np.where(mask, np.clip(patch, 1, 255), 0).astype(np.uint8)
    spec = InputSpec(size=48, window_px=160)
    inputs = []
    for top, left in [(10, 20), (120, 90), (60, 150)]:
        canvas = np.zeros((256, 256), dtype=np.uint8)
        canvas[top : top + cell.shape[0], left : left + cell.shape[1]] = cell
        inputs.append(single_cell_input(canvas, spec))
    assert np.array_equal(inputs[0], inputs[1])
    assert np.array_equal(inputs[0], inputs[2])
    assert inputs[0].any()


def test_unmasked_image_is_taken_whole_around_its_centre_only_by_a_model_trained_unmasked() -> None:
    photo = np.full((64, 64), 120, dtype=np.uint8)
    photo[30:34, 30:34] = 200
    assert np.array_equal(single_cell_input(photo, InputSpec(size=64, window_px=64, masked_background=False)), photo)
    with pytest.raises(UnsegmentableCrop):  # a masked model: no cell the detector would find, no guess
        single_cell_input(photo, InputSpec(size=64, window_px=64))


def test_an_unmasked_crop_is_masked_around_the_object_nearest_its_centre() -> None:
    rng = np.random.default_rng(4)
    crop = rng.normal(110, 2.5, (200, 200)).astype(np.float32)
    centre_patch, centre_mask = render_cell(rng, "round")
    edge_patch, edge_mask = render_cell(rng, "spindle")
    for (patch, mask), (top, left) in (((centre_patch, centre_mask), (70, 70)), ((edge_patch, edge_mask), (0, 110))):
        region = crop[top : top + mask.shape[0], left : left + mask.shape[1]][: 200 - top, : 200 - left]
        keep = mask[: region.shape[0], : region.shape[1]]
        region[keep] = patch[: region.shape[0], : region.shape[1]][keep]
    cell = crop_cell(np.clip(np.rint(crop), 0, 255).astype(np.uint8), InputSpec(size=64, window_px=128))
    assert cell.kind == SEGMENTED
    assert abs(cell.area_px - centre_mask.sum()) < 0.25 * centre_mask.sum()  # the centre cell, not the edge one
    assert cell.window[64, 64] > 0 and cell.window[0, 0] == 0  # its background masked to 0


def test_shrinking_by_a_whole_factor_averages_blocks() -> None:
    window = RNG.integers(0, 256, (192, 192), dtype=np.uint8)
    expected = window.reshape(96, 2, 96, 2).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(resize_window(window, 96).astype(np.float64) - expected).max() <= 1.0


def _masked_cell(seed: int) -> np.ndarray:
    patch, mask = render_cell(np.random.default_rng(seed), "round")
    canvas = np.zeros((200, 200), dtype=np.uint8)
    canvas[50 : 50 + patch.shape[0], 60 : 60 + patch.shape[1]] = np.where(mask, np.clip(patch, 1, 255), 0)
    return canvas


def test_standardised_cells_have_the_standard_mean_and_spread() -> None:
    spec = InputSpec(size=48, window_px=160, intensity="standardised")
    cell = single_cell_input(_masked_cell(5), spec)
    inside = cell[cell > 0].astype(np.float64)
    assert abs(inside.mean() - STANDARD_CELL_MEAN) < 2
    assert abs(inside.std() - STANDARD_CELL_STD) < 2
    raw = single_cell_input(_masked_cell(5), InputSpec(size=48, window_px=160))
    assert np.array_equal(cell > 0, raw > 0)  # the masked background stays 0, the cell stays non-zero


def test_standardised_input_ignores_exposure_and_offset() -> None:
    """A brighter lamp or longer exposure (gain and offset) must not change what the model sees."""
    spec = InputSpec(size=48, window_px=160, intensity="standardised")
    cell = _masked_cell(6)
    brighter = np.where(cell > 0, np.clip(cell.astype(np.float64) * 1.4 + 15, 1, 255), 0).astype(np.uint8)
    assert not np.array_equal(cell, brighter)
    difference = single_cell_input(cell, spec).astype(int) - single_cell_input(brighter, spec).astype(int)
    assert np.abs(difference).max() <= 3
