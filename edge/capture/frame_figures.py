"""What a frame looks like to a person setting up a rig: its mean grey level, the fraction of
clipped pixels and a focus score. `doctor --capture` reports them and the live view shows them
on every frame it sends; both use these, so a number read on the page means what doctor says."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FrameFigures:
    mean_grey: float
    clipped: float  # fraction of pixels at 0 or 255
    sharpness: float  # the focus score


def sharpness(pixels: np.ndarray) -> float:
    """Variance of the Laplacian: high when edges are crisp, falls as the image blurs."""
    image = pixels.astype(np.float32)
    laplacian = (
        image[:-2, 1:-1] + image[2:, 1:-1] + image[1:-1, :-2] + image[1:-1, 2:] - 4.0 * image[1:-1, 1:-1]
    )  # fmt: skip
    return float(laplacian.var())


def frame_figures(pixels: np.ndarray) -> FrameFigures:
    clipped = float(np.count_nonzero((pixels == 0) | (pixels == 255))) / pixels.size
    return FrameFigures(float(pixels.mean()), clipped, sharpness(pixels))
