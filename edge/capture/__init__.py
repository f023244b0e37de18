"""Frame sources: the Pi camera, a folder of images, or synthetic frames with known cells (a new
field each frame, or a still field)."""

from __future__ import annotations

from edge.capture.base import BadFrame, CaptureTimeout, EndOfSource, Frame, FrameSource, SourceError, check_frame
from edge.config import SOURCE_KINDS, Config

__all__ = [
    "BadFrame",
    "CaptureTimeout",
    "EndOfSource",
    "Frame",
    "FrameSource",
    "SourceError",
    "check_frame",
    "open_source",
    "parse_source_arg",
]


def parse_source_arg(text: str) -> dict[str, str]:
    """`--source replay:DIR|composed:DIR|synthetic|still|picamera2` as overrides of the [source] section."""
    kind, _, rest = text.partition(":")
    if kind in ("replay", "composed"):
        if not rest:
            raise ValueError(f"{kind} needs a folder: --source {kind}:DIR")
        return {"kind": kind, f"{kind}_path": rest}
    if kind in SOURCE_KINDS and not rest:
        return {"kind": kind}
    others = ", ".join(k for k in SOURCE_KINDS if k not in ("replay", "composed"))
    raise ValueError(f"unknown source {text!r}; use replay:DIR, composed:DIR, {others}")


def open_source(config: Config, max_frames: int | None = None) -> FrameSource:
    """Build (not yet open) the source the config names."""
    source = config.source
    if source.kind in ("synthetic", "still"):
        drawn = {"height": source.height, "width": source.width, "cells": source.synthetic_cells,
                 "seed": source.synthetic_seed, "fps": source.fps, "max_frames": max_frames}  # fmt: skip
        if source.kind == "still":
            from edge.capture.still_field import StillFieldSource

            return StillFieldSource(**drawn, move_every=source.still_move_every, divide_every=source.still_divide_every)
        from edge.capture.synthetic import SyntheticSource

        return SyntheticSource(**drawn)
    if source.kind == "composed":
        from edge.capture.composed import ComposedSource, ComposeSettings, load_crops

        settings = ComposeSettings(
            width=source.width,
            height=source.height,
            repeats=source.composed_repeats,
            pair_fraction=source.composed_pair_fraction,
            triple_fraction=source.composed_triple_fraction,
            seed=source.synthetic_seed,
        )
        crops = load_crops(source.composed_path)
        if not crops:
            raise ValueError(f"source.composed_path: no masked crops found in {source.composed_path!r}")
        return ComposedSource(crops, settings, fps=source.fps, max_frames=max_frames)
    if source.kind == "replay":
        from edge.capture.replay import ReplaySource

        return ReplaySource(
            source.replay_path,
            fps=source.fps,
            loop=source.replay_loop,
            max_frames=max_frames,
            follow=source.replay_follow,
        )
    from edge.capture.picamera import Picamera2Source

    return Picamera2Source(source.width, source.height, config.camera, start_timeout_s=source.timeout_s)
