"""The committed tiny model (tests/models/, used by the edge tests without TensorFlow) is the one
today's training and export code would make."""

from __future__ import annotations

from conftest import TINY_MODEL

from edge.classify.card import CARD_FORMAT, ModelCard, sha256_file
from train.synthetic_model import MAKERS, makers_digest


def test_the_committed_tiny_model_is_not_stale_against_the_code_that_makes_it() -> None:
    for path in (TINY_MODEL, TINY_MODEL.with_name("tiny.float.tflite")):
        card = ModelCard.load(path.with_suffix(".json")).to_dict()
        assert card["sha256"] == sha256_file(path)
        made_by = card["made_by"]
        assert made_by["code"] == list(MAKERS)
        assert made_by["code_digest"] == makers_digest(), (
            f"{', '.join(MAKERS)} changed since tests/models/tiny.* was made: run `make tiny-model` and commit it"
        )
        assert ModelCard.load(path.with_suffix(".json")).to_dict()["format"] == CARD_FORMAT
