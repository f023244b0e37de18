"""The one definition of "model input", shared by training (train/) and the Pi (edge/).

A model sees a square window of ``window_px`` frame pixels centred on the cell, with every
pixel outside the cell's mask set to 0 (the training crops are masked that way), resized to
``size`` x ``size``. train/ builds its tensors with these same functions, so what the model
learned from and what the Pi feeds it cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from edge.capture.images import ImageError
from edge.cells.detect_settings import DetectSettings

if TYPE_CHECKING:  # edge.cells.detect imports scipy, only needed for unmasked crops
    from edge.cells.detect import Detection

# Pre-masked crops (as in the training data) have a black background around the cell that reaches
# the image's border: at least this share of the pixels of three of its four sides is exactly 0
# (every shared training crop: 85 % or more on every side; an unmasked photograph: none).
MASKED_BORDER_MIN_FRACTION = 0.5
# and what is lit is a cell, not a padded photograph: an outline (a masked cell fills at most 78 % of
# its bounding box in the shared data, an ellipse 79 %; a photograph all of it), or a small part of
# the image (at most 40 % in the shared data; a 12 px black frame round a 128 px photograph: 71 %).
MASKED_CELL_MAX_FILL = 0.9
MASKED_CELL_MAX_SHARE = 0.5

# intensity="standardised": a cell's own pixels are mapped to this mean and spread (grey levels),
# so exposure, lamp and culture-medium brightness, which differ between rigs and cultures more
# than between cell lines, do not reach the model. 1..255 keeps cells apart from the 0 background.
STANDARD_CELL_MEAN = 128.0
STANDARD_CELL_STD = 32.0
INTENSITY_MODES = ("raw", "standardised")


@dataclass(frozen=True)
class InputSpec:
    """What a model expects, as recorded in its model card."""

    size: int  # model input side in pixels
    channels: int = 1
    window_px: int = 192  # side of the window around the cell, in pixels at training scale
    masked_background: bool = True
    pixel_size_um: float | None = None  # training scale, when known
    intensity: str = "raw"  # "raw" grey levels, or "standardised" per cell (see standardise_cell)

    def window_for(self, rig_pixel_size_um: float | None) -> int:
        """Window side in the rig's pixels: the same physical field the model was trained on."""
        if rig_pixel_size_um is None or self.pixel_size_um is None:
            return self.window_px
        return max(1, round(self.window_px * self.pixel_size_um / rig_pixel_size_um))


def cell_window(
    gray: np.ndarray,
    centre_yx: tuple[float, float],
    window_px: int,
    mask: np.ndarray | None = None,
    mask_origin_yx: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Cut a window_px square centred on the cell; outside the frame and the mask is 0.

    ``mask`` is the cell's boolean mask whose top-left pixel sits at ``mask_origin_yx`` in
    frame coordinates (a detection's bbox-local mask, or a whole-frame mask at (0, 0)).
    """
    height, width = gray.shape
    top = math.floor(centre_yx[0] + 0.5) - window_px // 2
    left = math.floor(centre_yx[1] + 0.5) - window_px // 2
    window = np.zeros((window_px, window_px), dtype=np.uint8)
    y0, y1 = max(top, 0), min(top + window_px, height)
    x0, x1 = max(left, 0), min(left + window_px, width)
    if y0 < y1 and x0 < x1:
        window[y0 - top : y1 - top, x0 - left : x1 - left] = gray[y0:y1, x0:x1]
    if mask is None:
        return window
    keep = np.zeros((window_px, window_px), dtype=bool)
    mask_top, mask_left = mask_origin_yx
    y0, y1 = max(top, mask_top), min(top + window_px, mask_top + mask.shape[0])
    x0, x1 = max(left, mask_left), min(left + window_px, mask_left + mask.shape[1])
    if y0 < y1 and x0 < x1:
        keep[y0 - top : y1 - top, x0 - left : x1 - left] = mask[
            y0 - mask_top : y1 - mask_top, x0 - mask_left : x1 - mask_left
        ]
    window[~keep] = 0
    return window


def resize_window(window: np.ndarray, size: int) -> np.ndarray:
    """Resize a square window to the model's input side (antialiased when shrinking).

    Whole-number shrink factors go through Pillow's box reduce() first (reducing_gap=1), the
    rest through bilinear: 5x faster than bilinear alone at 192 -> 96 (20 vs 100 us a cell), which
    matters at 100 cells a frame on a Pi.
    """
    if window.shape == (size, size):
        return window
    resized = Image.fromarray(window).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=1.0)
    return np.asarray(resized, dtype=np.uint8)


def standardise_cell(cell: np.ndarray, masked_background: bool) -> np.ndarray:
    """Map a cell's pixels (the non-zero ones when the background is masked) to the standard
    mean and spread; the masked background stays 0. A flat cell is only shifted."""
    values = cell.astype(np.float32)
    inside = cell > 0 if masked_background else np.ones(cell.shape, dtype=bool)
    if not inside.any():
        return cell
    mean = float(values[inside].mean())
    spread = max(float(values[inside].std()), 1.0)
    scaled = (values - mean) * (STANDARD_CELL_STD / spread) + STANDARD_CELL_MEAN
    result = np.clip(np.rint(scaled), 1, 255).astype(np.uint8)
    result[~inside] = 0
    return result


def finish_input(window: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A cut window as model input: resized, then standardised when the model wants that."""
    resized = resize_window(window, spec.size)
    if spec.intensity == "standardised":
        return standardise_cell(resized, spec.masked_background)
    return resized


def model_input(
    gray: np.ndarray,
    centre_yx: tuple[float, float],
    spec: InputSpec,
    mask: np.ndarray | None = None,
    mask_origin_yx: tuple[int, int] = (0, 0),
    window_px: int | None = None,
) -> np.ndarray:
    """One cell of a frame as the model's uint8 input (size x size)."""
    side = spec.window_px if window_px is None else window_px
    use_mask = mask if spec.masked_background else None
    return finish_input(cell_window(gray, centre_yx, side, use_mask, mask_origin_yx), spec)


def is_premasked(gray: np.ndarray) -> bool:
    """True for a crop whose background was already set to 0, like the training crops: decided by
    structure, not by counting black pixels. The black must surround the cell and reach the border
    (three of the four sides mostly 0), and the non-zero pixels must be a cell rather than a
    photograph: an outline (under MASKED_CELL_MAX_FILL of their bounding box) or a small part of the
    image (under MASKED_CELL_MAX_SHARE). A photograph padded with black (a frame, a side) or with
    scattered black pixels fails one or the other."""
    zero = gray == 0
    if zero.all() or not zero.any():
        return False
    sides = (zero[0], zero[-1], zero[:, 0], zero[:, -1])
    if sum(bool(side.mean() >= MASKED_BORDER_MIN_FRACTION) for side in sides) < 3:
        return False
    ys, xs = np.nonzero(~zero)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return ys.size < MASKED_CELL_MAX_FILL * box or ys.size < MASKED_CELL_MAX_SHARE * gray.size


# How a single-cell image became a window (the card counts them; `classify` and `evaluate` use
# the same function, so a crop gets the same treatment wherever it goes).
PREMASKED = "premasked"  # black background already: the non-zero pixels are the mask
SEGMENTED = "segmented"  # unmasked: the Pi's detector found the cell, the Pi's mask applied
UNMASKED = "unmasked"  # unmasked, and the model wants no mask: the image whole around its centre
CROP_KINDS = (PREMASKED, SEGMENTED, UNMASKED)


class UnsegmentableCrop(ImageError):
    """An unmasked crop in which the Pi's detector finds no cell: it cannot be masked as the
    Pi would mask it, so it is skipped (by name) rather than fed to the model unmasked."""


@dataclass(frozen=True)
class CropCell:
    """The one cell of a single-cell image, as the window (before resizing) the model sees."""

    window: np.ndarray
    area_px: int  # pixels in the cell's mask, at the image's scale (the whole image when unmasked)
    kind: str  # one of CROP_KINDS
    cells_in_image: int = 1  # whole cells the image holds (a frame given as a crop holds several)


def crop_cell(
    gray: np.ndarray, spec: InputSpec, window_px: int | None = None, detect_settings: DetectSettings | None = None
) -> CropCell:
    """The window (before resizing) around the one cell of an image, as in the training folders.

    A pre-masked crop is centred on the centroid of its non-zero pixels, which are the mask.
    An unmasked crop (a plain cut-out of a cell on its real background, the common lab format)
    goes through the detector and mask the Pi applies to every cell of a frame, keeping the
    object nearest the image centre; where it finds none the crop is an UnsegmentableCrop.
    Only a model trained without masks takes an unmasked image whole around its centre.
    Training augments these windows and then finishes them like the Pi (``finish_input``).
    ``detect_settings``: the detector's (default: detection's defaults, as a rig's config has them).
    """
    side = spec.window_px if window_px is None else window_px
    if is_premasked(gray):
        mask = gray > 0
        ys, xs = np.nonzero(mask)
        if ys.size:
            use_mask = mask if spec.masked_background else None
            window = cell_window(gray, (ys.mean(), xs.mean()), side, use_mask)
            return CropCell(window, int(ys.size), PREMASKED, masked_cells(mask, detect_settings))
    if not spec.masked_background:
        centre = ((gray.shape[0] - 1) / 2, (gray.shape[1] - 1) / 2)
        return CropCell(cell_window(gray, centre, side), int(gray.size), UNMASKED)
    objects = objects_in_crop(without_black_padding(gray), detect_settings)
    found = nearest_to_centre_of(objects, gray.shape)
    if found is None:
        raise UnsegmentableCrop(
            "unmasked crop in which the detector finds no cell (too little texture against the background, or "
            "smaller than detect.min_area_px); mask it yourself or leave it out"
        )
    window = cell_window(gray, found.centroid_yx, side, found.mask, found.origin_yx)
    # Neighbours cut by the crop's edge, and scraps far smaller than the cell, are what a crop
    # happens to hold around its cell; whole objects of a cell's size are cells of their own.
    big_enough = OTHER_CELL_MIN_SHARE * found.area
    others = [d for d in objects if d is not found and not near_edge(d, gray.shape) and d.area >= big_enough]
    return CropCell(window, found.area, SEGMENTED, 1 + len(others))


# An object besides a crop's cell counts as another cell from this share of the cell's area.
OTHER_CELL_MIN_SHARE = 0.25
EDGE_MARGIN_PX = 3


def near_edge(found: Detection, shape: tuple[int, ...]) -> bool:
    y0, x0, y1, x1 = found.bbox
    m = EDGE_MARGIN_PX
    return y0 < m or x0 < m or y1 > shape[0] - m or x1 > shape[1] - m


def masked_cells(mask: np.ndarray, detect_settings: DetectSettings | None = None) -> int:
    """Separate cells in a pre-masked image: its lit parts of at least detection's smallest cell."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return 1
    sizes = np.bincount(labels.ravel())[1:]
    return max(1, int(np.count_nonzero(sizes >= (detect_settings or DetectSettings()).min_area_px)))


def without_black_padding(gray: np.ndarray) -> np.ndarray:
    """An unmasked crop's exact-black pixels (padding a tool added, or the odd dead pixel) set to
    its median grey, for detection only: the edge of a black frame is texture the detector would
    take for an object. The window is still cut from the image as it is."""
    black = gray == 0
    if not black.any() or black.all():
        return gray
    filled = gray.copy()
    filled[black] = np.median(gray[~black])
    return filled


def objects_in_crop(gray: np.ndarray, detect_settings: DetectSettings | None = None) -> list[Detection]:
    """Every object the detector finds in a crop. Objects touching the crop's edge are kept: a
    crop cuts its background, not only its cell."""
    from edge.cells.detect import detect

    return detect(gray, replace(detect_settings or DetectSettings(), skip_border=False))


def nearest_to_centre_of(found: list[Detection], shape: tuple[int, ...]) -> Detection | None:
    if not found:
        return None
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    return min(found, key=lambda d: (d.centroid_yx[0] - cy) ** 2 + (d.centroid_yx[1] - cx) ** 2)


def nearest_to_centre(gray: np.ndarray, detect_settings: DetectSettings | None = None) -> Detection | None:
    """The detected object nearest the image centre, or None."""
    return nearest_to_centre_of(objects_in_crop(gray, detect_settings), gray.shape)


def single_cell_window(gray: np.ndarray, spec: InputSpec, window_px: int | None = None) -> np.ndarray:
    """The window (before resizing) around the one cell of an image (see ``crop_cell``)."""
    return crop_cell(gray, spec, window_px).window


def single_cell_input(gray: np.ndarray, spec: InputSpec, window_px: int | None = None) -> np.ndarray:
    """Model input for an image that holds one cell (see ``crop_cell``)."""
    return finish_input(single_cell_window(gray, spec, window_px), spec)


def single_cell_inputs(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """``single_cell_input`` of each image, stacked: uint8 (N, size, size)."""
    return np.stack([single_cell_input(gray, spec) for gray in images])
