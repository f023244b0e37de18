"""The model card: the JSON file beside every .tflite that says what the model is.

train/ writes cards with ``ModelCard.to_dict``; edge/ reads them with ``ModelCard.load``.
Only the fields the Pi needs are typed here; everything else (metrics, provenance,
architecture) is kept verbatim in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.classify.preprocess import INTENSITY_MODES, InputSpec
from edge.errors import ModelError
from edge.paths import read_regular_file
from edge.records import CardFacts

__all__ = ["ModelCard", "ModelCardError", "ModelError", "ModelFileError", "ModelIntegrityError"]

# /2 added the backbone, its pretrained weights (source, sha256, licence), MACs and measured
# speed (training.architecture, speed). Cards of format /1 still load: the Pi needs no new field.
CARD_FORMAT = "metascope-model-card/2"
# Bounds that keep a damaged card from asking for absurd work (a 10^6 px window is a 931 GiB
# allocation): far beyond any model or camera this project serves.
MAX_INPUT_SIZE = 1024
MAX_WINDOW_PX = 8192
MIN_PIXEL_UM, MAX_PIXEL_UM = 1e-3, 1e3
READABLE_FORMATS = ("metascope-model-card/1", CARD_FORMAT)


MAX_CARD_BYTES = 4 << 20  # a card is a few kB of JSON


class ModelFileError(ModelError):
    """The model or card file is missing or unreadable."""


class ModelCardError(ModelError):
    """The card is not valid JSON or lacks/garbles a required field."""


class ModelIntegrityError(ModelError):
    """The .tflite's sha256 is not the one recorded in its card."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path_for(model_path: str | os.PathLike[str]) -> Path:
    return Path(model_path).with_suffix(".json")


@dataclass(frozen=True)
class ModelCard:
    name: str
    labels: tuple[str, str]  # in output order; a single sigmoid output is P(labels[1])
    positive_label: str
    threshold: float
    input: InputSpec
    sha256: str
    version: str = "1"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def negative_label(self) -> str:
        return self.labels[1] if self.positive_label == self.labels[0] else self.labels[0]

    @property
    def facts(self) -> CardFacts:
        """What the stages act on beyond the input spec, typed (edge/records.py)."""
        return CardFacts.from_extra(self.extra)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        path = Path(path)
        try:
            text = read_regular_file(path, MAX_CARD_BYTES).decode("utf-8")
        except FileNotFoundError as exc:
            raise ModelFileError(f"{path}: model card not found (expected beside the .tflite)") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path}: cannot read model card: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"{path}: model card is not valid JSON: {exc}") from exc
        except RecursionError:
            raise ModelCardError(f"{path}: model card is not usable: nested too deeply") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "model card") -> ModelCard:
        def fail(problem: str) -> ModelCardError:
            return ModelCardError(f"{source}: {problem}")

        if not isinstance(data, dict):
            raise fail("top level must be a JSON object")
        if data.get("format", READABLE_FORMATS[0]) not in READABLE_FORMATS:
            raise fail(
                f"card format {data['format']!r} is not one this metascope reads ({', '.join(READABLE_FORMATS)}); "
                "upgrade metascope"
            )
        for key in ("name", "labels", "positive_label", "threshold", "input", "sha256"):
            if key not in data:
                raise fail(f"missing required field '{key}'")
        problem = _identity_problem(data)
        if problem:
            raise fail(problem)
        known = {"name", "version", "labels", "positive_label", "threshold", "input", "sha256"}
        return cls(
            name=str(data["name"]),
            version=str(data.get("version", "1")),
            labels=(data["labels"][0], data["labels"][1]),
            positive_label=data["positive_label"],
            threshold=float(data["threshold"]),
            input=_input_spec(data["input"], fail),
            sha256=data["sha256"],
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        spec = self.input
        return {
            "format": CARD_FORMAT,
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "positive_label": self.positive_label,
            "threshold": self.threshold,
            "input": {
                "size": spec.size,
                "channels": spec.channels,
                "window_px": spec.window_px,
                "pixel_size_um": spec.pixel_size_um,
                "masked_background": spec.masked_background,
                "intensity": spec.intensity,
                "pixel_range": [0, 255],
            },
            **{k: v for k, v in self.extra.items() if k != "format"},
            "sha256": self.sha256,
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def _identity_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the card's labels, threshold or sha256, if anything."""
    labels = data["labels"]
    if (
        not isinstance(labels, list)
        or len(labels) != 2
        or not all(isinstance(label, str) and label for label in labels)
        or labels[0] == labels[1]
    ):
        return f"'labels' must be two different non-empty strings, got {labels!r}"
    if data["positive_label"] not in labels:
        return f"'positive_label' {data['positive_label']!r} is not one of {labels}"
    threshold = data["threshold"]
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
        return f"'threshold' must be a number between 0 and 1, got {threshold!r}"
    sha = data["sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        return "'sha256' must be 64 lowercase hex digits"
    return None


def _input_spec(spec: Any, fail) -> InputSpec:
    """The card's ``input`` object as an InputSpec; ``fail(problem)`` makes the error to raise."""
    if not isinstance(spec, dict):
        raise fail("'input' must be an object")
    try:
        pixel_size = spec.get("pixel_size_um")
        input_spec = InputSpec(
            size=int(spec["size"]),
            channels=int(spec.get("channels", 1)),
            window_px=int(spec["window_px"]),
            masked_background=bool(spec.get("masked_background", True)),
            pixel_size_um=None if pixel_size is None else float(pixel_size),
            intensity=str(spec.get("intensity", "raw")),
        )
    except KeyError as exc:
        raise fail(f"'input' lacks {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise fail(f"'input' has a bad value: {exc}") from exc
    if input_spec.size < 1 or input_spec.window_px < 1 or input_spec.channels not in (1, 3):
        raise fail(f"'input' size/window_px must be positive and channels 1 or 3, got {spec}")
    if input_spec.size > MAX_INPUT_SIZE:
        raise fail(f"'input' size must be at most {MAX_INPUT_SIZE} px, got {input_spec.size}")
    if input_spec.window_px > MAX_WINDOW_PX:
        raise fail(f"'input' window_px must be at most {MAX_WINDOW_PX} px, got {input_spec.window_px}")
    pixel = input_spec.pixel_size_um
    if pixel is not None and not (math.isfinite(pixel) and MIN_PIXEL_UM <= pixel <= MAX_PIXEL_UM):
        raise fail(f"'input' pixel_size_um must be between {MIN_PIXEL_UM:g} and {MAX_PIXEL_UM:g}, got {pixel!r}")
    if input_spec.intensity not in INTENSITY_MODES:
        raise fail(f"'input' intensity must be one of {INTENSITY_MODES}, got {input_spec.intensity!r}")
    return input_spec
