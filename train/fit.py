"""Training one model: augmented batches, class weighting, early stopping on a validation split."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from train.augment import AugmentSettings, augment_batch
from train.dataset import Dataset
from train.model import build_cnn


@dataclass(frozen=True)
class FitSettings:
    widths: tuple[int, ...] = (16, 32, 64, 96)
    convs_per_stage: int = 1
    pooling: str = "avg+max"
    dropout: float = 0.3
    max_epochs: int = 60
    patience: int = 12  # epochs without a better validation AUC before stopping
    min_epochs: int = 10  # the first epochs' validation AUC is noise; never stop or keep them
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    class_weighting: bool = True
    seed: int = 0
    augment: AugmentSettings = field(default_factory=AugmentSettings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        data["augment"] = self.augment.to_dict()
        return data


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int  # 1-based; the weights kept are those of this epoch
    epochs_run: int
    seconds: float


def as_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, size, size) -> float32 (N, size, size, 1): the Keras model's raw 0..255 input."""
    return images.astype(np.float32)[..., np.newaxis]


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Inverse class frequency, normalised so the mean weight per cell is 1."""
    counts = np.bincount(y, minlength=2).astype(np.float64)
    return {label: float(len(y) / (2 * counts[label])) for label in (0, 1)}


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, freshly augmented batches every epoch, with per-cell class weights."""

    def __init__(self, images: np.ndarray, y: np.ndarray, settings: FitSettings, seed: int):
        super().__init__()
        self.images, self.y, self.settings = images, y, settings
        weights = class_weights(y) if settings.class_weighting else {0: 1.0, 1: 1.0}
        self.sample_weights = np.array([weights[int(label)] for label in y], dtype=np.float32)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(y))

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.settings.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.settings.batch_size
        members = self.order[index * size : (index + 1) * size]
        batch = augment_batch(self.images[members], self.rng, self.settings.augment)
        return as_model_input(batch), self.y[members].astype(np.float32), self.sample_weights[members]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.y))


class EpochLine(keras.callbacks.Callback):
    """One short line per epoch on stderr: the progress display of a fit."""

    def __init__(self, label: str, max_epochs: int):
        super().__init__()
        self.label, self.max_epochs = label, max_epochs
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        shown = "  ".join(f"{key} {value:.3f}" for key, value in logs.items() if key != "learning_rate")
        elapsed = time.monotonic() - self.started
        print(f"{self.label} epoch {epoch + 1:3d}/{self.max_epochs}  {shown}  [{elapsed:5.0f} s]", file=sys.stderr)


def build_model(size: int, settings: FitSettings, decay_steps: int) -> keras.Model:
    # Cosine decay over the planned epochs: the last epochs take small steps, so the weights
    # kept do not depend on where in a noisy step the run happened to stop.
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, decay_steps=decay_steps, alpha=0.05)
    model = build_cnn(
        size,
        widths=settings.widths,
        convs_per_stage=settings.convs_per_stage,
        dropout=settings.dropout,
        seed=settings.seed,
        pooling=settings.pooling,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=settings.weight_decay),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


def fit_model(
    train: Dataset,
    validation: Dataset | None,
    settings: FitSettings,
    epochs: int | None = None,
    label: str = "fit",
    progress: bool = True,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> FitResult:
    """Train from scratch.

    With ``validation``: early stopping on validation ROC AUC, keeping the best epoch's weights.
    Without (the final fit on all data): exactly ``epochs`` epochs (chosen by cross-validation).
    """
    if validation is None and epochs is None:
        raise ValueError("a fit without a validation split needs a fixed number of epochs")
    keras.utils.set_random_seed(settings.seed)
    max_epochs = settings.max_epochs if epochs is None else epochs
    # The schedule always spans max_epochs, so a final fit stopped at the epoch that
    # cross-validation chose follows the same learning-rate path as the folds did.
    model = build_model(train.spec.size, settings, settings.max_epochs * math.ceil(len(train) / settings.batch_size))
    callbacks: list[keras.callbacks.Callback] = []
    if progress:
        callbacks.append(EpochLine(label, max_epochs))
    callbacks.extend(extra_callbacks or [])
    validation_data = None
    if validation is not None:
        validation_data = (as_model_input(validation.images), validation.y.astype(np.float32))
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_auc",
                mode="max",
                patience=settings.patience,
                start_from_epoch=settings.min_epochs,
                restore_best_weights=True,
            )
        )
    started = time.monotonic()
    history = model.fit(
        AugmentedBatches(train.images, train.y, settings, settings.seed),
        validation_data=validation_data,
        epochs=max_epochs,
        callbacks=callbacks,
        verbose=0,
    ).history
    seconds = time.monotonic() - started
    epochs_run = len(history["loss"])
    if validation is not None:
        scores = history["val_auc"][settings.min_epochs :]
        best_epoch = settings.min_epochs + int(np.argmax(scores)) + 1 if scores else epochs_run
    else:
        best_epoch = epochs_run
    return FitResult(
        model, {k: [float(v) for v in vals] for k, vals in history.items()}, best_epoch, epochs_run, seconds
    )


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float probabilities of the positive label from the Keras model."""
    return model.predict(as_model_input(images), batch_size=batch_size, verbose=0).reshape(-1)
