"""Augmentation that respects what a microscope can and cannot change about a cell.

A cell has no preferred orientation on the slide, so any rotation and mirror image is as
real as the original; illumination, focus and camera noise vary between sessions. Its size
does not: the crops are at one fixed scale, and size is part of what tells the lines apart,
so scale is only jittered slightly (focus and segmentation make the outline a few percent
uncertain). Everything works on the uint8 windows around the cells (before resizing) with the masked
background (0) kept at 0, and ends in edge.classify.preprocess.finish_input, as the Pi's cells do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from edge.classify.preprocess import InputSpec, finish_input


@dataclass(frozen=True)
class AugmentSettings:
    """Distances are in window pixels (before resizing), grey levels in 0..255."""

    rotate_any_angle: bool = True  # besides the exact 90-degree turns and flips
    scale_jitter: float = 0.15  # +- fraction of size
    shift_px: float = 4.0  # +- pixels of centring error
    # A camera's limited-range Y plane maps grey levels to 16 + 219/255 x Y, a lamp or exposure
    # scales them; per-cell standardisation does not cancel that once resizing has blended the
    # 0 background into the edge pixels. So offset and gain are drawn per cell, on the window.
    brightness: float = 16.0  # +- grey levels added to the cell
    gain: float = 0.15  # +- fraction the cell's grey levels are multiplied by
    contrast: float = 0.15  # +- fraction of contrast about the cell's mean
    blur_probability: float = 0.25
    blur_sigma_max: float = 2.0
    noise_sigma_max: float = 4.0  # grey levels

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | bool]) -> AugmentSettings:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


NO_AUGMENTATION = AugmentSettings(
    rotate_any_angle=False,
    scale_jitter=0.0,
    shift_px=0.0,
    brightness=0.0,
    gain=0.0,
    contrast=0.0,
    blur_probability=0.0,
    noise_sigma_max=0.0,
)


def _geometric(image: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """Rotation, mirror, slight scale and shift in one resampling (nearest at the mask edge)."""
    image = np.rot90(image, int(rng.integers(4)))
    if rng.random() < 0.5:
        image = image[:, ::-1]
    angle = rng.uniform(-np.pi / 4, np.pi / 4) if settings.rotate_any_angle else 0.0
    scale = 1.0 + rng.uniform(-settings.scale_jitter, settings.scale_jitter)
    shift = rng.uniform(-settings.shift_px, settings.shift_px, size=2)
    if angle == 0.0 and scale == 1.0 and not shift.any():
        return np.ascontiguousarray(image)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    matrix = np.array([[cos, -sin], [sin, cos]])
    centre = (np.array(image.shape) - 1) / 2.0
    offset = centre - matrix @ (centre + shift)
    # Bilinear inside the cell; the mask is resampled separately (nearest) so the background
    # stays exactly 0 and the edge is not smeared into dark halo pixels.
    values = ndimage.affine_transform(image.astype(np.float32), matrix, offset, order=1, mode="constant")
    mask = ndimage.affine_transform((image > 0).astype(np.uint8), matrix, offset, order=0, mode="constant") > 0
    return np.where(mask, np.clip(np.rint(values), 1, 255), 0).astype(np.uint8)


def _photometric(image: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    mask = image > 0
    if not mask.any():
        return image
    values = image.astype(np.float32)
    if settings.blur_probability and rng.random() < settings.blur_probability:
        sigma = rng.uniform(0.3, settings.blur_sigma_max)
        # Blur the cell alone (normalised by the blurred mask) so the black background does
        # not bleed in and darken the edge.
        weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
        values = ndimage.gaussian_filter(values, sigma) / np.maximum(weight, 1e-3)
    mean = values[mask].mean()
    contrast = 1.0 + rng.uniform(-settings.contrast, settings.contrast)
    gain = 1.0 + rng.uniform(-settings.gain, settings.gain)
    values = ((values - mean) * contrast + mean) * gain + rng.uniform(-settings.brightness, settings.brightness)
    if settings.noise_sigma_max:
        values = values + rng.normal(0.0, rng.uniform(0.0, settings.noise_sigma_max), values.shape)
    return np.where(mask, np.clip(np.rint(values), 1, 255), 0).astype(np.uint8)


def augment_window(window: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """A new augmented copy of one uint8 window (before resizing)."""
    return _photometric(_geometric(window, rng, settings), rng, settings)


def augment_windows(
    windows: np.ndarray, rng: np.random.Generator, settings: AugmentSettings, spec: InputSpec
) -> np.ndarray:
    """Augmented model inputs (N, size, size) from uint8 windows, finished as the Pi finishes a cell."""
    return np.stack([finish_input(augment_window(window, rng, settings), spec) for window in windows])
