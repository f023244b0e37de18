"""Training one model: augmented batches (or a teacher's fixed views), class weighting, a
warm-up then cosine learning-rate schedule, a fixed number of epochs or early stopping."""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np

from train import progress
from train.augment import augment_windows
from train.compact_cnn import build_cnn
from train.dataset import Dataset
from train.recipe import BACKBONES, LITE_BACKBONES, FitSettings


class _WithoutRetracingWarnings(logging.Filter):
    """TensorFlow warns "triggered tf.function retracing" when predict runs on a new model of each
    fold: expected here (a fresh model per fit), and nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_WithoutRetracingWarnings())


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int  # 1-based; the weights kept are those of this epoch
    epochs_run: int
    seconds: float


@dataclass(frozen=True)
class SoftTargets:
    """A teacher's view of the training cells: fixed augmented views (N, K, size, size) and
    its probability for each (N, K). The student learns from the same views."""

    views: np.ndarray
    probabilities: np.ndarray


def as_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, size, size) -> float32 (N, size, size, 1): the Keras model's raw 0..255 input."""
    return images.astype(np.float32)[..., np.newaxis]


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Inverse class frequency, normalised so the mean weight per cell is 1."""
    counts = np.bincount(y, minlength=2).astype(np.float64)
    return {label: float(len(y) / (2 * counts[label])) if counts[label] else 1.0 for label in (0, 1)}


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled batches every epoch with per-cell class weights: freshly augmented windows, or,
    with a teacher, one of each cell's fixed views and a target mixing label and teacher."""

    def __init__(self, train: Dataset, settings: FitSettings, teacher: SoftTargets | None = None):
        super().__init__()
        if teacher is None and train.windows is None:
            raise ValueError("training needs the cells' windows (train.dataset.load keeps them)")
        self.train, self.settings, self.teacher = train, settings, teacher
        weights = class_weights(train.y) if settings.class_weighting else {0: 1.0, 1: 1.0}
        self.sample_weights = np.array([weights[int(label)] for label in train.y], dtype=np.float32)
        self.rng = np.random.default_rng(settings.seed)
        self.order = self.rng.permutation(len(train))

    def __len__(self) -> int:
        return math.ceil(len(self.train) / self.settings.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.settings.batch_size
        members = self.order[index * size : (index + 1) * size]
        y = self.train.y[members].astype(np.float32)
        if self.teacher is None:
            windows = self.train.drawn_windows(members, self.rng)
            batch = augment_windows(windows, self.rng, self.settings.augment, self.train.spec)
            return as_model_input(batch), y, self.sample_weights[members]
        view = self.rng.integers(self.teacher.views.shape[1], size=len(members))
        batch = self.teacher.views[members, view]
        share = self.settings.teacher_weight
        target = (1.0 - share) * y + share * self.teacher.probabilities[members, view].astype(np.float32)
        return as_model_input(batch), target, self.sample_weights[members]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.train))


# Keras' names, as a reader needs them: the AUC Keras reports per epoch is on the training batches.
SHOWN_NAMES = {
    "loss": "training loss",
    "auc": "training AUC",
    "val_loss": "validation loss",
    "val_auc": "validation AUC",
}


class EpochLine(keras.callbacks.Callback):
    """One short line per epoch on stderr: the progress display of a fit."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs = label, epochs
        self.started = self.epoch_started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        shown = "  ".join(
            f"{SHOWN_NAMES.get(key, key)} {value:.3f}" for key, value in logs.items() if key != "learning_rate"
        )
        now = time.monotonic()
        left = progress.epoch_done(now - self.epoch_started)
        stamp = f"[{now - self.started:5.0f} s{', ' + left if left else ''}]"
        print(f"{self.label} epoch {epoch + 1:3d}/{self.epochs}  {shown}  {stamp}", file=sys.stderr)


@functools.cache
def _imagenet_weights(name: str) -> dict[str, np.ndarray]:
    from train.efficientnet_lite import imagenet_weights

    return imagenet_weights(name)


def build_network(size: int, settings: FitSettings) -> keras.Model:
    """The untrained network of ``settings.backbone`` (an EfficientNet-Lite with its ImageNet weights)."""
    if settings.backbone in LITE_BACKBONES:
        from train.efficientnet_lite import build_lite

        weights = _imagenet_weights(settings.backbone)
        return build_lite(settings.backbone, size, settings.dropout, settings.seed, weights=weights)
    if settings.backbone == "compact":
        return build_cnn(
            size,
            widths=settings.widths,
            convs_per_stage=settings.convs_per_stage,
            dropout=settings.dropout,
            seed=settings.seed,
            pooling=settings.pooling,
        )
    raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {settings.backbone!r}")


def learning_rate_schedule(settings: FitSettings, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from learning_rate/25 to learning_rate, then cosine decay to nearly 0:
    the last epochs take small steps, so the weights kept do not depend on where in a noisy
    step the run happened to stop."""
    warmup = round(settings.warmup_fraction * total_steps)
    start = settings.learning_rate / 25.0 if warmup else settings.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        start,
        decay_steps=max(total_steps - warmup, 1),
        alpha=1e-3,
        warmup_target=settings.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def build_model(size: int, settings: FitSettings, total_steps: int, track_auc: bool) -> keras.Model:
    model = build_network(size, settings)
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate_schedule(settings, total_steps), weight_decay=settings.weight_decay
        ),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=settings.label_smoothing),
        # Not on a teacher's soft targets: AUC needs yes/no labels.
        metrics=[keras.metrics.AUC(name="auc")] if track_auc else None,
    )
    return model


def fit_model(
    train: Dataset,
    validation: Dataset | None,
    settings: FitSettings,
    epochs: int | None = None,
    label: str = "fit",
    teacher: SoftTargets | None = None,
) -> FitResult:
    """Train from the backbone's starting weights.

    With early stopping (``settings.patience`` > 0) and a ``validation`` part: stop on
    validation ROC AUC, keeping the best epoch's weights. Otherwise exactly ``epochs`` epochs
    (default ``settings.epochs``). ``teacher``: learn from its fixed views and probabilities.
    """
    stopping = settings.early_stopping and validation is not None and len(validation) > 0
    keras.utils.set_random_seed(settings.seed)
    run_epochs = settings.epochs if epochs is None else epochs
    # The schedule always spans settings.epochs, so a final fit stopped at the epoch that
    # cross-validation chose follows the same learning-rate path as the folds did.
    steps = settings.epochs * math.ceil(len(train) / settings.batch_size)
    model = build_model(train.spec.size, settings, steps, track_auc=teacher is None or stopping)
    callbacks: list[keras.callbacks.Callback] = []
    if progress.shown():
        callbacks.append(EpochLine(label, run_epochs))
    validation_data = None
    if stopping:
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
        TrainingBatches(train, settings, teacher),
        validation_data=validation_data,
        epochs=run_epochs,
        callbacks=callbacks,
        verbose=0,
    ).history
    seconds = time.monotonic() - started
    epochs_run = len(history["loss"])
    best_epoch = epochs_run
    if stopping:
        scores = history["val_auc"][settings.min_epochs :]
        best_epoch = settings.min_epochs + int(np.argmax(scores)) + 1 if scores else epochs_run
    return FitResult(
        model, {k: [float(v) for v in vals] for k, vals in history.items()}, best_epoch, epochs_run, seconds
    )


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Float probabilities of the positive label from the Keras model."""
    if len(images) == 0:
        return np.zeros(0, np.float32)
    return model.predict(as_model_input(images), batch_size=batch_size, verbose=0).reshape(-1)
