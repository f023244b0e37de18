"""The PyTorch port against ../shared/data/lite0-reference (features within 1e-4).

python check_port.py lite0-fp32.npz ../shared/data/lite0-reference/lite0-reference.npz
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from lite_torch import Lite

state = dict(np.load(sys.argv[1]))
reference = np.load(sys.argv[2])
model = Lite(state).eval()
with torch.no_grad():
    features = model.features(torch.from_numpy(reference["input_nhwc"]).permute(0, 3, 1, 2))
    logits = model._fc(features)
print("features max |diff|", float(np.abs(features.numpy() - reference["features"]).max()))
print("logits max |diff|", float(np.abs(logits.numpy() - reference["logits"]).max()))
