"""Quantisation-aware fine-tuning and bias correction: the rounding they model is the rounding
the int8 model does, and they change nothing else."""

from __future__ import annotations

import tracemalloc

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from train.int8_aware import (
    RELU6_STEP,
    Int8AwareConv2D,
    Int8AwareReLU6,
    _rounded_as_folded,
    bias_corrected,
    conv_batchnorm_pairs,
    folding_factor,
)


def test_relu6_rounds_to_the_int8_grid_in_training_only_with_a_straight_through_gradient() -> None:
    layer = Int8AwareReLU6(max_value=6.0)
    x = tf.constant(np.linspace(-1.0, 7.0, 101, dtype=np.float32))
    trained = layer(x, training=True).numpy()
    assert np.allclose(trained / RELU6_STEP, np.round(trained / RELU6_STEP), atol=1e-4)
    assert np.array_equal(layer(x, training=False).numpy(), np.clip(x.numpy(), 0, 6))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x, training=True))
    gradient = tape.gradient(y, x).numpy()
    assert np.array_equal(gradient, ((x.numpy() > 0) & (x.numpy() < 6)).astype(np.float32))


def conv_bn_model(seed: int = 0, side: int = 6) -> keras.Model:
    """Grey cells spread to 3 channels, then a 1x1 convolution (no padding effects) and a
    BatchNorm with uneven statistics."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((side, side, 1))
    spread = layers.Conv2D(3, 1, name="spread")(inputs)
    conv = Int8AwareConv2D(4, 1, use_bias=False, name="c_conv")
    bn = layers.BatchNormalization(name="c_bn")
    outputs = bn(conv(spread))
    conv.pair_with(bn)
    model = keras.Model(inputs, outputs)
    model.get_layer("spread").set_weights([rng.normal(0, 0.01, (1, 1, 1, 3)), rng.normal(0, 1, 3)])
    conv.set_weights([rng.normal(0, 1, (1, 1, 3, 4)).astype(np.float32)])
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.01, 1, 4)])
    return model


def test_weights_are_rounded_as_the_converter_folds_and_rounds_them() -> None:
    model = conv_bn_model()
    conv, bn = conv_batchnorm_pairs(model)[0]
    kernel = conv.get_weights()[0]
    factor = np.asarray(folding_factor(bn))
    rounded = np.asarray(_rounded_as_folded(tf.constant(kernel), tf.constant(factor), -1))
    per_channel_step = np.abs(kernel * factor).max(axis=(0, 1, 2)) / 127.0
    levels = rounded * factor / per_channel_step
    assert np.allclose(levels, np.round(levels), atol=1e-3), "folded weights land on 127 levels per channel"
    assert np.abs(rounded - kernel).max() <= (per_channel_step / np.abs(factor)).max() / 2 + 1e-6
    x = np.random.default_rng(1).normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    assert np.array_equal(conv(x, training=False).numpy(), conv.convolution_op(x, conv.kernel).numpy())
    assert not np.array_equal(conv(x, training=True).numpy(), conv(x, training=False).numpy())


def test_bias_correction_cancels_the_mean_shift_of_rounded_weights_and_touches_nothing_else() -> None:
    model = conv_bn_model()
    cells = np.random.default_rng(2).integers(0, 256, (50, 6, 6)).astype(np.uint8)
    before = [w.copy() for w in model.get_weights()]
    corrected = bias_corrected(model, cells, cells=50)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)), "original untouched"
    changed = [not np.array_equal(a, b) for a, b in zip(model.get_weights(), corrected.get_weights(), strict=True)]
    assert changed == [False, False, False, False, True, False, False], "only BatchNorm's offset moves"
    # Give both models the rounded weights the int8 model will have: the corrected one keeps
    # the float model's mean output, the uncorrected one does not.
    x = cells[..., np.newaxis].astype(np.float32)
    reference = model(x).numpy().mean(axis=(0, 1, 2))
    for candidate in (model, corrected):
        conv, bn = conv_batchnorm_pairs(candidate)[0]
        conv.set_weights([np.asarray(_rounded_as_folded(conv.kernel, folding_factor(bn), -1))])
    left = np.abs(corrected(x).numpy().mean(axis=(0, 1, 2)) - reference).max()
    uncorrected = np.abs(model(x).numpy().mean(axis=(0, 1, 2)) - reference).max()
    assert uncorrected > 1e-3 and left < uncorrected / 20


def test_bias_correction_holds_one_batch_of_activations_not_every_calibration_cells() -> None:
    """A fit calibrates on up to 2,000 cells: holding every layer's input for all of them at once
    took a Lite0 fit of the shared data to 16-21 GB resident. The activations this model makes
    for 1,024 cells are 28 MB; the correction may hold a small part of that at any moment."""
    side, count = 48, 1024
    model = conv_bn_model(side=side)
    cells = np.random.default_rng(3).integers(0, 256, (count, side, side)).astype(np.uint8)
    every_activation = count * side * side * 3 * np.dtype(np.float32).itemsize
    tracemalloc.start()
    try:
        bias_corrected(model, cells, cells=count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < every_activation / 4, f"peak {peak / 1e6:.1f} MB for {every_activation / 1e6:.1f} MB of activations"
