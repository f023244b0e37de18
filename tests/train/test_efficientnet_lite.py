"""The ImageNet EfficientNet-Lite ports: the torch-free weight reader, the Keras Lite0 against
reference outputs of the original weights, Lite1 and Lite2 against their files' every weight,
and the grey input the Pi feeds them."""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from train.efficientnet_lite import (
    WeightsError,
    blocks,
    build_lite,
    build_lite_imagenet,
    imagenet_weights,
    load_backbone_weights,
    weights_path,
)
from train.speed import PI4_REFERENCE_MACS, count_macs
from train.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, CheckpointError, read_state_dict

REFERENCE = SHARED_DATA / "lite0-reference" / "lite0-reference.npz"


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return imagenet_weights()


def test_the_weight_file_reads_as_the_documented_state_dict(weights: dict[str, np.ndarray]) -> None:
    assert len(weights) == 296
    assert sum(name.endswith("num_batches_tracked") for name in weights) == 49
    names = list(weights)
    assert names[0] == "_conv_stem.weight" and names[-1] == "_fc.bias"
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3) and weights["_conv_stem.weight"].dtype == np.float32
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert weights["_conv_head.weight"].shape == (1280, 320, 1, 1) and weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_bn0.num_batches_tracked"].dtype == np.int64
    assert "_blocks.0._expand_conv.weight" not in weights, "block 0 has no expansion"


def test_a_truncated_weight_file_is_a_clear_error(tmp_path: Path) -> None:
    whole = weights_path().read_bytes()
    for cut in (10, 5000, len(whole) // 2, len(whole) - 3):
        damaged = tmp_path / f"cut{cut}.pth"
        damaged.write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            read_state_dict(damaged)
        with pytest.raises(WeightsError, match="sha256"):
            imagenet_weights(path=damaged)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a PyTorch checkpoint"),
        (pickle.dumps({"weights": [1, 2, 3]}), "not a legacy PyTorch checkpoint"),
        (pickle.dumps(LEGACY_MAGIC) + pickle.dumps(999), "protocol 999"),
        (b"", "truncated"),
    ],
)
def test_a_foreign_file_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "foreign.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(path)


def test_a_zip_format_checkpoint_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "new-style.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    with pytest.raises(CheckpointError, match="zip-format"):
        read_state_dict(path)


class _Exploit:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-metascope-test",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hostile.pth"
    system = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True, "type_sizes": {}}
    path.write_bytes(
        pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(LEGACY_PROTOCOL, 2) + pickle.dumps(system, 2)
        + pickle.dumps({"x": _Exploit()}, 2)
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"shutil\.rmtree"):
        read_state_dict(path)


def test_another_file_of_the_right_format_is_not_taken_for_the_imagenet_weights(tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    content = weights_path().read_bytes()
    other.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))  # one weight's last byte changed
    with pytest.raises(WeightsError, match="is not the EfficientNet-Lite0 ImageNet file"):
        imagenet_weights(path=other)


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference outputs not present at {REFERENCE}")
def test_the_keras_port_reproduces_the_reference_features_and_logits(weights: dict[str, np.ndarray]) -> None:
    reference = np.load(REFERENCE)
    model = build_lite_imagenet("lite0", 224)
    load_backbone_weights(model, weights, grey_input=False)
    features, logits = model(reference["input_nhwc"], training=False)
    assert np.abs(np.asarray(features) - reference["features"]).max() < 1e-4
    assert np.abs(np.asarray(logits) - reference["logits"]).max() < 1e-4


def test_grey_input_is_the_scaled_grey_copied_to_three_channels(weights: dict[str, np.ndarray]) -> None:
    """The classifier takes the Pi's uint8 grey cell; inside it, (p - 127) / 128 and the
    grey-to-RGB copy (folded into the stem) must give the original network's features."""
    import keras

    size = 64
    grey = np.random.default_rng(0).integers(0, 256, (2, size, size, 1)).astype(np.float32)
    classifier = build_lite("lite0", size, weights=weights)
    pooled = keras.Model(classifier.input, classifier.get_layer("pool").output)(grey, training=False)
    original = build_lite_imagenet("lite0", size)
    load_backbone_weights(original, weights, grey_input=False)
    rgb = np.repeat((grey - 127.0) / 128.0, 3, axis=3)
    expected, _ = original(rgb, training=False)
    assert np.abs(np.asarray(pooled) - np.asarray(expected)).max() < 1e-4


def test_macs_match_the_published_scale_and_the_speed_reference() -> None:
    macs = count_macs(build_lite_imagenet("lite0", 224))
    assert macs == PI4_REFERENCE_MACS
    assert 370e6 < macs < 410e6, "published: 407 M MAdds at 224 px"
    assert count_macs(build_lite("lite0", 96)) < 450e6 / 5, "the 96 px default costs about a sixth of 224 px"


@pytest.mark.parametrize(
    ("name", "blocks_count", "published_macs", "published_params"),
    [("lite1", 21, 631e6, 5.4e6), ("lite2", 21, 899e6, 6.1e6)],
)
def test_lite1_and_lite2_are_built_from_their_scaling_and_take_every_weight_of_their_files(
    name: str, blocks_count: int, published_macs: float, published_params: float
) -> None:
    """The deeper variants are Lite0 with more blocks per inner stage (Lite2 also wider): the
    network built from those rules must take every backbone weight of the variant's file, each of
    the shape it expects, and cost what the variant is published to cost at its own input size."""
    from train.efficientnet_lite import VARIANTS

    assert len(blocks(name)) == blocks_count
    trained_px = VARIANTS[name].trained_px
    model = build_lite_imagenet(name, trained_px)
    load_backbone_weights(model, imagenet_weights(name), grey_input=False)
    # This project counts conv and dense MACs only: Lite0 counts 385 M of its published 407 M.
    assert 0.9 * published_macs < count_macs(model) < published_macs
    assert abs(model.count_params() - published_params) < 0.1e6


def test_weights_of_another_variant_are_refused_not_half_loaded(weights: dict[str, np.ndarray]) -> None:
    with pytest.raises(WeightsError, match="weights of shape"):
        load_backbone_weights(build_lite_imagenet("lite0", 64), imagenet_weights("lite1"), grey_input=False)
    with pytest.raises(WeightsError, match="weights of shape"):
        load_backbone_weights(build_lite_imagenet("lite1", 64), weights, grey_input=False)
    extra_block = {**weights, "_blocks.16._project_conv.weight": np.zeros((320, 1920, 1, 1), np.float32)}
    with pytest.raises(WeightsError, match="has no layer for 1 of the file's weights"):
        load_backbone_weights(build_lite_imagenet("lite0", 64), extra_block, grey_input=False)
    with pytest.raises(WeightsError, match="not the EfficientNet-Lite2 ImageNet file"):
        imagenet_weights("lite2", path=weights_path("lite1"))


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference outputs not present at {REFERENCE}")
@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_lite1_and_lite2_see_in_the_reference_pattern_what_lite0_sees(name: str) -> None:
    """No reference outputs exist for Lite1/Lite2; a stride or padding wrong would still load
    every weight. Ported right, each names the reference pattern (a disc on sinusoids) by the
    ImageNet class Lite0 gives it (722, ping-pong ball; a margin of 0.7 and 2.1 logits)."""
    reference = np.load(REFERENCE)
    model = build_lite_imagenet(name, 224)
    load_backbone_weights(model, imagenet_weights(name), grey_input=False)
    _, logits = model(reference["input_nhwc"], training=False)
    assert int(np.asarray(logits)[0].argmax()) == int(reference["logits"].argmax())


def test_every_lite_backbone_fit_offers_is_a_variant_the_port_builds() -> None:
    """train/recipe.py names the Lite backbones without importing Keras; this port holds their
    weights. A name in one and not the other would offer a backbone that cannot be built."""
    from train.efficientnet_lite import VARIANTS
    from train.recipe import LITE_BACKBONES

    assert tuple(VARIANTS) == LITE_BACKBONES
