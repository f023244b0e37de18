"""`make demo` until the default model lands: train a tiny model on synthetic cells, then
classify a folder of fresh synthetic cells with it through the `metascope classify` CLI."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from edge.cli import main as metascope
from edge.synthetic import synthetic_batch
from train.synthetic_model import train_synthetic_model

DEMO_DIR = Path("var/demo")


def main() -> int:
    model_path, _, _ = train_synthetic_model(DEMO_DIR / "model" / "synthetic-demo")
    cells_dir = DEMO_DIR / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    crops, labels = synthetic_batch(12, seed=2024)
    for index, (crop, label) in enumerate(zip(crops, labels, strict=True)):
        Image.fromarray(crop).save(cells_dir / f"cell_{index:02d}_{('round', 'spindle')[label]}.png")
    print(f"demo: model {model_path}, cells {cells_dir} (file names carry the true kind)", file=sys.stderr)
    return metascope(["classify", str(cells_dir), "--model", str(model_path)])


if __name__ == "__main__":
    sys.exit(main())
