"""Synthetic phase-contrast-like cells: known truth for tests, benchmarks and the demo.

Two kinds a tiny CNN can tell apart: ``round`` (compact, near-circular) and ``spindle``
(elongated). Each cell has a bright phase halo at its edge, a textured body and a darker
nucleus, on the same 0..255 scale as real crops. Nothing here is meant to look like a
particular cell line; it exists so the whole product can be exercised without real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("round", "spindle")


def render_cell(rng: np.random.Generator, kind: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One cell as (float32 intensity patch, bool mask), square, centred on the cell."""
    if kind == "round":
        semi_major = rng.uniform(16, 26) * scale
        semi_minor = semi_major * rng.uniform(0.8, 1.0)
    elif kind == "spindle":
        semi_major = rng.uniform(32, 48) * scale
        semi_minor = rng.uniform(8, 13) * scale
    else:
        raise ValueError(f"unknown synthetic cell kind {kind!r}; choose one of {KINDS}")
    angle = rng.uniform(0, np.pi)
    half = int(np.ceil(semi_major)) + 3
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    radius = np.sqrt((along / semi_major) ** 2 + (across / semi_minor) ** 2)
    mask = radius <= 1.0
    body = rng.uniform(95, 125)
    halo = rng.uniform(40, 60) * np.exp(-(((radius - 0.92) / 0.09) ** 2))
    nucleus = rng.uniform(15, 30) * np.exp(-((radius / 0.35) ** 2))
    texture = rng.normal(0, 6, radius.shape)
    patch = (body + halo - nucleus + texture).astype(np.float32)
    return patch, mask


def synthetic_crop(rng: np.random.Generator, kind: str, canvas: int = 256) -> np.ndarray:
    """A pre-masked single-cell crop like the training data: the cell on a black canvas."""
    patch, mask = render_cell(rng, kind)
    side = patch.shape[0]
    if side >= canvas:
        raise ValueError(f"a {side} px cell does not fit a {canvas} px canvas")
    image = np.zeros((canvas, canvas), dtype=np.uint8)
    top, left = (int(v) for v in rng.integers(0, canvas - side, size=2))
    region = image[top : top + side, left : left + side]
    region[mask] = np.clip(np.rint(patch[mask]), 1, 255)  # 0 is reserved for background
    return image


def synthetic_batch(count: int, seed: int = 0, canvas: int = 256) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` crops alternating between kinds, and their labels (0 = round, 1 = spindle)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    return [synthetic_crop(rng, KINDS[label], canvas) for label in labels], labels


def write_synthetic_dataset(
    root: str | os.PathLike[str], per_group: int = 20, groups: int = 3, seed: int = 0, canvas: int = 256
) -> Path:
    """A labelled folder in the training layout: ROOT/<kind>/<kind>_g<N>/cell_<i>.png."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for kind in KINDS:
        for group in range(groups):
            folder = root / kind / f"{kind}_g{group}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_group):
                Image.fromarray(synthetic_crop(rng, kind, canvas)).save(folder / f"cell_{index:03d}.png")
    return root
