"""Augmentation that respects what a microscope can and cannot change about a cell.

A cell has no preferred orientation on the slide, so any rotation and mirror image is as
real as the original; illumination, focus and camera noise vary between sessions. Its size
does not: the crops are at one fixed scale, and size is part of what tells the lines apart,
so scale is only jittered slightly (focus and segmentation make the outline a few percent
uncertain). Everything works on uint8 model inputs with the masked background (0) kept at 0,
as the Pi will see it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentSettings:
    rotate_any_angle: bool = True  # besides the exact 90-degree turns and flips
    scale_jitter: float = 0.08  # +- fraction of size
    shift_px: float = 2.0  # +- pixels of centring error (input pixels)
    # Mild on purpose: the cell's grey-level distribution (halo, nucleus) is part of what
    # tells the lines apart; +-40 levels / +-30% contrast was no better in cross-validation.
    brightness: float = 10.0  # +- grey levels added to the cell
    contrast: float = 0.1  # +- fraction of contrast about the cell's mean
    blur_probability: float = 0.25
    blur_sigma_max: float = 1.0  # input pixels
    noise_sigma_max: float = 4.0  # grey levels

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


NO_AUGMENTATION = AugmentSettings(
    rotate_any_angle=False,
    scale_jitter=0.0,
    shift_px=0.0,
    brightness=0.0,
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
    values = (values - mean) * contrast + mean + rng.uniform(-settings.brightness, settings.brightness)
    if settings.noise_sigma_max:
        values = values + rng.normal(0.0, rng.uniform(0.0, settings.noise_sigma_max), values.shape)
    return np.where(mask, np.clip(np.rint(values), 1, 255), 0).astype(np.uint8)


def augment_batch(images: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """A new augmented copy of a uint8 batch (N, size, size)."""
    out = np.empty_like(images)
    for index, image in enumerate(images):
        out[index] = _photometric(_geometric(image, rng, settings), rng, settings)
    return out
