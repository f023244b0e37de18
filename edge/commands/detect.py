"""`metascope detect`: run the service's cell detection on a few frames and show every object it
found, kept or rejected, with why: annotated PNGs and objects.csv, to tune [detect]."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path

from edge.cells.detect_settings import DetectSettings
from edge.commands.classify import iter_image_paths, shown
from edge.commands.common import CommandError, UsageError, add_config_args, config_from_args
from edge.config import Config
from edge.errors import ExitCode
from edge.paths import default_model_path, find_model

PNG_SUFFIX = ".detect.png"
OBJECTS_CSV = "objects.csv"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "detect",
        help="show what detection finds in frames: annotated PNGs and a CSV of every object",
        description="Detect cells in each FRAME (images, or folders of them) with the config's [detect] settings, "
        "as `run` does, and write DIR/<frame>.detect.png (green: cell, orange: cluster, red: rejected; "
        "numbered as the CSV) and DIR/objects.csv (area, solidity, cores, cluster and why, kept or why "
        "rejected). Change [detect] in the config and run it again to tune detection: the files it wrote "
        "into DIR are never taken for frames, even with DIR inside a FRAME folder. Clusters are told "
        "exactly as `run` tells them with the same config and model (the model card's training cell areas "
        "set a single cell's size).",
    )
    parser.add_argument("frames", nargs="+", metavar="FRAME", help="frames or folders of frames (recursive)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the PNGs and objects.csv")
    parser.add_argument(
        "--model", help="NAME.tflite whose card sets the cell size, as for run (overrides [model] path)"
    )
    add_config_args(parser)
    parser.set_defaults(handler=detect_frames)


def settings_for(config: Config, model: str | None) -> tuple[DetectSettings, str]:
    """Detection's settings as `run` makes them from this config and model's card (read, not loaded:
    no interpreter is needed); without any model, the learnt rule's own cell size."""
    from edge.cells.scale import detect_settings
    from edge.classify.card import ModelCard, ModelError, card_path_for

    chosen = model or config.model.path
    path = find_model(chosen) if chosen else default_model_path()
    if path is None:
        return detect_settings(config.detect, None, None, None)
    try:
        card = ModelCard.load(card_path_for(path))
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    rig_pixel_size = config.pipeline.pixel_size_um or None
    settings, rule = detect_settings(
        config.detect, card.facts.training_median_area_px, card.input.pixel_size_um, rig_pixel_size
    )
    return settings, f"{rule} (model {path.name})"


def detect_frames(args: argparse.Namespace) -> int:
    from edge.capture.images import ImageError, read_grayscale
    from edge.cells.detect import inspect, min_frame_side
    from edge.commands.detect_view import COLUMNS, annotate, rows

    settings, rule = settings_for(config_from_args(args), args.model)
    print(f"clusters: {rule}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: not a folder")
    empty: list[Path] = []
    table, failed, frames = [], 0, 0
    written: set[str] = set()
    for path in iter_image_paths(args.frames, empty, ignore=written_by_detect(args.out)):
        try:
            gray = read_grayscale(path, min_frame_side(settings))
        except ImageError as exc:
            print(f"metascope detect: skipped {exc}" if str(path) in str(exc) else f"skipped {path}: {exc}",
                  file=sys.stderr)  # fmt: skip
            failed += 1
            continue
        objects = inspect(gray, settings)
        name = _unique(f"{path.stem}{PNG_SUFFIX}", written)
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            annotate(gray, objects).save(args.out / name)
        except OSError as exc:
            raise CommandError(f"cannot write {args.out / name}: {exc}") from None
        table += rows(str(path), objects)
        frames += 1
        kept = [item for item in objects if not item.rejected]
        print(f"{shown(path)}: {len(kept)} cells ({sum(i.detection.cluster for i in kept)} clusters), "
              f"{len(objects) - len(kept)} rejected -> {args.out / name}")  # fmt: skip
    for folder in empty:
        print(f"metascope detect: {folder}: no files in this folder", file=sys.stderr)
    if frames:
        try:
            with (args.out / OBJECTS_CSV).open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(table)
        except OSError as exc:
            raise CommandError(f"cannot write {args.out / OBJECTS_CSV}: {exc}") from None
        print(f"objects: {args.out / OBJECTS_CSV} ({len(table)} rows)")
    return ExitCode.FAILED if failed or empty or not frames else ExitCode.OK


def written_by_detect(out: Path) -> Callable[[Path], bool]:
    """Whether a listed file is one this command writes into ``out`` (its PNGs, objects.csv):
    with --out inside a frames folder, or the folder itself, a second run would analyse them."""
    out = out.resolve()

    def written(path: Path) -> bool:
        named = path.name == OBJECTS_CSV or path.name.endswith(PNG_SUFFIX)
        return named and path.parent.resolve() == out

    return written


def _unique(name: str, taken: set[str]) -> str:
    """Frames of the same name from different folders get their own PNG."""
    stem, number = name.removesuffix(PNG_SUFFIX), 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}{PNG_SUFFIX}"
    taken.add(name)
    return name
