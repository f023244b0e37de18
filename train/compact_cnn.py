"""The compact CNN: small enough for a Pi's CPU, exportable to full-integer int8 TFLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers

from train.int8_aware import Int8AwareConv2D, Int8AwareReLU6

# "masked" pooling (mean over the cell's mask instead of the window) was tried: no better in
# cross-validation, and its division has no int8 kernel in tflite-runtime 2.14 (a Pi fallback).
POOLINGS = ("avg", "avg+max")


def build_cnn(
    input_size: int,
    *,
    widths: Sequence[int],
    convs_per_stage: int,
    dropout: float,
    pooling: str,
    seed: int = 0,
    channels: int = 1,
) -> keras.Model:
    """A plain VGG-style stack: each stage is ``convs_per_stage`` 3x3 convolutions (BatchNorm,
    ReLU; the first of each stage strides by 2), then global pooling and one sigmoid unit: the
    probability of the positive label.

    ``pooling``: "avg" (global average) or "avg+max" (average and maximum side by side: the
    window is mostly masked background, so an average scales every feature by the cell's area,
    while the maximum says whether a pattern occurs at all, whatever the cell's size).

    The input is raw pixel values 0..255 (float); scaling happens inside the model so the
    exported int8 input quantises uint8 pixels with no extra step on the Pi. BatchNorm folds
    into the convolutions at export, so it costs nothing at inference.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    initializer = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(shape=(input_size, input_size, channels), name="cell")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    x = conv_stages(x, widths, convs_per_stage, initializer)
    return keras.Model(inputs, pooled_head(x, pooling, dropout, seed), name="metascope_cnn")


def conv_stages(x: Any, widths: Sequence[int], convs_per_stage: int, initializer: Any) -> Any:
    """Each stage: ``convs_per_stage`` 3x3 convolutions + BatchNorm + ReLU6, the first striding 2."""
    for stage, width in enumerate(widths):
        for conv in range(convs_per_stage):
            stride = 2 if conv == 0 else 1
            # Int8-aware (train/int8_aware.py): in training the weights are rounded as the int8
            # model will have them once BatchNorm is folded in, and ReLU6 outputs to the int8
            # grid. A taught model's calls sit near the threshold, where rounding flips labels
            # (without it the fast model's int8 agreed with float on 98.7% of cells).
            convolution = Int8AwareConv2D(
                width,
                3,
                strides=stride,
                padding="same",
                use_bias=False,
                kernel_initializer=initializer,
                name=f"conv{stage}_{conv}",
            )
            # momentum 0.9, not Keras' 0.99: small cell datasets give few steps per epoch, and
            # the inference statistics must settle within a short run.
            bn = layers.BatchNormalization(momentum=0.9, name=f"bn{stage}_{conv}")
            convolution.pair_with(bn)
            x = bn(convolution(x))
            # ReLU6, not ReLU: bounded activations keep each int8 scale fine (the shipped
            # model's int8 agreement with float rose from 98.9% to 99.7%).
            x = Int8AwareReLU6(max_value=6.0, name=f"relu{stage}_{conv}")(x)
    return x


def pooled_head(x: Any, pooling: str, dropout: float, seed: int) -> Any:
    """Global pooling, dropout and one sigmoid unit: the probability of the positive label."""
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
        return layers.Dense(1, activation="sigmoid", name="head")(x)
    # One linear unit per pooled vector, summed, rather than one unit on their concatenation:
    # maxima are several times larger than averages, and int8 gives a concatenation a single
    # scale, which would round the averages away (int8 vs float agreement fell to 96.5%).
    logits = []
    for kind, pool in (("avg", layers.GlobalAveragePooling2D), ("max", layers.GlobalMaxPooling2D)):
        pooled = pool(name=f"{kind}_pool")(x)
        pooled = layers.Dropout(dropout, seed=seed, name=f"{kind}_dropout")(pooled)
        logits.append(layers.Dense(1, name=f"head_{kind}")(pooled))
    return layers.Activation("sigmoid", name="probability")(layers.Add(name="logit")(logits))
