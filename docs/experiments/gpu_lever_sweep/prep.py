"""Model inputs for the lever sweep, made by the project's own code (edge/), so the sweep on a GPU
sees exactly the windows train/ and the Pi see: each shared crop's 192 px window as the data set
masked it, and as the Pi's detector masks it once the crop is back on its own estimated
background (edge.capture.composed.on_background; two renderings, fresh noise and jitter each).

    python docs/experiments/gpu_lever_sweep/prep.py ../shared/data/fayyaz-mda231-pc3 windows.npz
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from edge.capture.composed import Crop, on_background
from edge.classify.preprocess import InputSpec, UnsegmentableCrop, crop_cell

RENDERINGS = 2
WINDOW_PX = 192


def main(root: Path, dest: Path) -> None:
    spec = InputSpec(size=96, window_px=WINDOW_PX)
    rng = np.random.default_rng(0)
    crops, pi_masked, labels, groups, unsegmentable = [], [], [], [], 0
    for row in csv.DictReader((root / "manifest.csv").open()):
        path = next(root.glob(f"{row['class']}/**/{row['file']}"), root / row["class"] / row["file"])
        gray = np.asarray(Image.open(path).convert("L"))
        crops.append(crop_cell(gray, spec).window)
        crop = Crop.from_image(gray, row["class"], row["file"])
        renderings = []
        for _ in range(RENDERINGS):
            try:
                renderings.append(crop_cell(on_background(crop, rng), spec).window)
            except UnsegmentableCrop:  # an all-zero window: left out of training and scoring
                renderings.append(np.zeros((WINDOW_PX, WINDOW_PX), np.uint8))
                unsegmentable += 1
        pi_masked.append(np.stack(renderings))
        labels.append(1 if row["class"] == "PC3" else 0)
        groups.append(re.search(r"(\d+kD\d)", row["subclass"]).group(1))
    print(f"{len(crops)} crops, {unsegmentable} of {RENDERINGS * len(crops)} renderings unsegmentable")
    np.savez_compressed(dest, ds=np.stack(crops), served=np.stack(pi_masked), labels=np.array(labels),
                        groups=np.array(groups))  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
