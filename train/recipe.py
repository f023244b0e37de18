"""How a model is trained: the settings of one fit, each backbone's recipe, and how its cells are
split and called.

Kept apart from train/trainer.py and train/make_model.py (which import Keras) so the command
line can name the choices and defaults without loading TensorFlow: `metascope-train fit`'s
options are built from these settings, and its --help shows each recipe's numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from train.augment import AugmentSettings

# The ImageNet EfficientNet-Lite backbones (train/efficientnet_lite.py), then the compact CNN.
LITE_BACKBONES = ("lite0", "lite1", "lite2")
BACKBONES = (*LITE_BACKBONES, "compact")

# int8 and float must call the same label on at least this share of the checked cells, or the
# Pi would run a different classifier than the one evaluated (the export is refused).
MIN_INT8_AGREEMENT = 0.99

# A single split (no cross-validation) tests on about this share of the groups; with early
# stopping, about this share more is held back as validation.
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.15
# A cell is called positive at or above this probability (the card's threshold).
THRESHOLD = 0.5

# What a fit trains on (FitSettings.inputs). "dataset": each crop's window as the data set masked
# it. "served": as the Pi serves it: the crop put back on its own estimated background and masked
# by the Pi's detector (edge.classify.preprocess.crop_cell), SERVED_RENDERINGS renderings a crop
# with fresh noise and sub-pixel jitter, one drawn at random each epoch (train/served.py).
INPUTS = ("dataset", "served")
# Two, as the lever sweep that measured served inputs used (docs/accuracy-levers.md); each more
# costs 37 KB a cell in memory and one more detection a cell at load time.
SERVED_RENDERINGS = 2


@dataclass(frozen=True)
class FitSettings:
    """How one model is trained. ``recipe(backbone)`` gives each backbone's defaults."""

    backbone: str = "lite0"
    # The compact CNN's shape (ignored by the Lite backbones, whose shape is fixed by their weights).
    widths: tuple[int, ...] = (16, 32, 64, 96)
    convs_per_stage: int = 1
    pooling: str = "avg+max"
    dropout: float = 0.2
    epochs: int = 15
    # 0: train exactly ``epochs`` (cross-validation folds then train exactly like the final
    # fit); N > 0: stop after N epochs without a better validation AUC (needs a validation part).
    patience: int = 0
    min_epochs: int = 5  # with early stopping: the first epochs' validation AUC is noise
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_fraction: float = 0.3  # of all steps, rising from learning_rate/25 ("one cycle")
    weight_decay: float = 1e-2
    label_smoothing: float = 0.0
    class_weighting: bool = True
    teacher_weight: float = 0.7  # with a teacher: its probability's share of the target
    seed: int = 0
    inputs: str = "served"  # one of INPUTS: served scored higher per tracked cell (docs/accuracy-levers.md)
    augment: AugmentSettings = field(default_factory=AugmentSettings)

    @property
    def early_stopping(self) -> bool:
        return self.patience > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        data["augment"] = self.augment.to_dict()
        return data


# Each backbone's recipe, measured in leave-one-condition-out CV on the shared data (README).
RECIPES: dict[str, FitSettings] = {
    # Fine-tuning every layer of the ImageNet weights: short, gentle, warm-up first so the new
    # head's first large gradients do not wreck the pretrained features.
    # Lite1 and Lite2 take Lite0's recipe (measured at the same settings: docs/accuracy-levers.md).
    **{name: FitSettings(backbone=name) for name in LITE_BACKBONES},
    # From scratch (or distilled): many more, cheaper epochs at a higher rate.
    "compact": FitSettings(
        backbone="compact",
        dropout=0.1,
        epochs=60,
        batch_size=32,
        learning_rate=2e-3,
        warmup_fraction=0.05,
        weight_decay=1e-4,
    ),
}


def recipe(backbone: str, **overrides: Any) -> FitSettings:
    """The backbone's recipe with the given fields replaced (None values are ignored)."""
    if backbone not in RECIPES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    return replace(RECIPES[backbone], **{key: value for key, value in overrides.items() if value is not None})
