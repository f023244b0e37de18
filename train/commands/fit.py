"""`metascope-train fit`: a labelled folder in; NAME.tflite (int8), its card, NAME.float.tflite
and a report out (train/make_model.py does the work)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.classify.preprocess import INTENSITY_MODES, InputSpec
from edge.commands.common import folder_arg, positive_int, probability_arg
from edge.errors import ExitCode, UsageError
from train.augment import NO_AUGMENTATION
from train.dataset import DEFAULT_MAX_BAD_FRACTION
from train.progress import add_quiet_option
from train.recipe import (
    BACKBONES,
    INPUTS,
    LITE_BACKBONES,
    MIN_INT8_AGREEMENT,
    RECIPES,
    SERVED_RENDERINGS,
    TEST_FRACTION,
    THRESHOLD,
    VALIDATION_FRACTION,
    FitSettings,
    recipe,
)

if TYPE_CHECKING:
    from train.make_model import FitRequest


def widths_arg(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated whole numbers, e.g. 16,32,64, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"every width must be at least 1, got {text!r}")
    return widths


def pixel_size_arg(text: str) -> float:
    from edge.classify.card import MAX_PIXEL_UM, MIN_PIXEL_UM

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (micrometres per pixel, e.g. 0.65)") from None
    if not MIN_PIXEL_UM <= value <= MAX_PIXEL_UM:
        raise argparse.ArgumentTypeError(f"{text} is not between {MIN_PIXEL_UM:g} and {MAX_PIXEL_UM:g} um per pixel")
    return value


# The recipe's settings the command line can change: FitSettings field -> its argparse keywords.
# Every one defaults to the chosen backbone's recipe (train/recipe.py), whose numbers --help shows.
RECIPE_OPTIONS: dict[str, dict[str, Any]] = {
    "widths": {"type": widths_arg, "help": "compact: conv stage widths, e.g. 16,32,64,96"},
    "convs_per_stage": {"type": positive_int, "help": "compact: convolutions per stage"},
    "pooling": {"choices": ("avg", "avg+max"), "help": "compact: global pooling"},
    "epochs": {"type": positive_int, "help": "epochs per fit; the most with --patience"},
    "patience": {
        "type": int,
        "help": "0: train exactly --epochs, folds exactly like the final fit; N: stop after N epochs without a "
        "better validation AUC, on validation groups held back",
    },
    "min_epochs": {"type": int, "help": "with --patience: epochs before stopping may act"},
    "batch_size": {"type": positive_int, "help": "cells per training step"},
    "learning_rate": {"type": float, "help": "peak learning rate"},
    "dropout": {"type": float, "help": "dropout before the output unit"},
    "label_smoothing": {"type": float, "help": "label smoothing"},
    "teacher_weight": {"type": probability_arg, "help": "with --teacher: the teacher's share"},
    "class_weighting": {
        "flag": "--no-class-weights",
        "action": "store_const",
        "const": False,
        "help": "do not weight classes by inverse frequency",
    },
    "augment": {
        "flag": "--no-augment",
        "action": "store_const",
        "const": NO_AUGMENTATION,
        "help": "train on the images as they are",
    },
    "seed": {"type": int, "help": "seed of weights, augmentation and splits"},
    "inputs": {
        "choices": INPUTS,
        "help": "what the model learns from: each crop as the data set masked it (dataset), or as the Pi serves "
        f"it (served: the crop on its own estimated background, masked by the Pi's detector, "
        f"{SERVED_RENDERINGS} renderings a crop with fresh noise and jitter, one drawn each epoch; renderings the "
        "detector misses are left out). Calibration, distillation views, folds and the final fit all use it",
    },
}


def _backbones_by(shown: Callable[[FitSettings], str]) -> dict[str, list[str]]:
    """The backbones of each distinct value ``shown`` gives their recipes, in RECIPES order (so
    --help names lite0/lite1/lite2 once where their recipes agree)."""
    backbones_of: dict[str, list[str]] = {}
    for backbone, settings in RECIPES.items():
        backbones_of.setdefault(shown(settings), []).append(backbone)
    return backbones_of


def recipe_values(name: str) -> str:
    """Each backbone recipe's value of one FitSettings field, as --help shows it."""

    def shown(value: Any) -> str:
        if isinstance(value, tuple):
            return ",".join(str(part) for part in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    backbones_of = _backbones_by(lambda settings: shown(getattr(settings, name)))
    if len(backbones_of) == 1:
        return f"recipe: {next(iter(backbones_of))}"
    return "recipe: " + ", ".join(f"{'/'.join(backbones)} {value}" for value, backbones in backbones_of.items())


def recipes_text() -> str:
    """Every recipe's numbers, those no option changes included, for --help."""

    def numbers(r: FitSettings) -> str:
        return (
            f"{r.epochs} epochs, batch {r.batch_size}, peak learning rate {r.learning_rate:g} after a "
            f"{r.warmup_fraction:.0%} warm-up then cosine decay, AdamW weight decay {r.weight_decay:g}, dropout "
            f"{r.dropout:g}, label smoothing {r.label_smoothing:g}, patience {r.patience} (fixed epochs), class "
            f"weights {'on' if r.class_weighting else 'off'}, seed {r.seed}."
        )

    lines = ["recipes (each option above defaults to the chosen backbone's):"]
    lines += [f"{'/'.join(backbones)}: {text}" for text, backbones in _backbones_by(numbers).items()]
    return "  ".join(lines)


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    for name, keywords in RECIPE_OPTIONS.items():
        keywords = dict(keywords)
        flag = keywords.pop("flag", "--" + name.replace("_", "-"))
        shown = "" if "const" in keywords else f" ({recipe_values(name)})"
        parser.add_argument(flag, dest=name, default=None, **{**keywords, "help": keywords["help"] + shown})


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fit",
        help="train a model from DATA_DIR/<label>/.../<image> and export it",
        description="Train from a folder with exactly two label folders; split by group (never by file); "
        "export int8 + float TFLite, the model card and an evaluation report.",
        epilog=recipes_text(),
    )
    parser.add_argument("data_dir", type=folder_arg, metavar="DATA_DIR")
    parser.add_argument("--out", type=Path, required=True, help="output NAME or NAME.tflite (e.g. models/mda231-pc3)")
    parser.add_argument("--positive", help="the positive label (folder name); default: the second label folder")
    parser.add_argument(
        "--group-by",
        help="the unit splits never cut: N = the N-th folder below the label folder (default 1), or a regular "
        "expression on the path whose first group names the group, e.g. '(\\d+kD\\d)'",
    )
    parser.add_argument(
        "--cv", action="store_true", help="cross-validate by group first; the card's numbers come from it"
    )
    parser.add_argument("--cv-folds", type=positive_int, help="K grouped folds instead of leave-one-group-out")
    parser.add_argument(
        "--frames",
        action="store_true",
        help="with --cv: also score each fold's int8 model per tracked cell on its held-out group (its crops "
        "composed into frames through the Pi's detection, tracking and views, as `evaluate --frames`); the card "
        "and report carry it beside the crop-level figure",
    )
    parser.add_argument(
        "--backbone",
        choices=BACKBONES,
        default=FitSettings.backbone,
        help="lite0: EfficientNet-Lite0 fine-tuned from ImageNet (the default; accurate, ~70 M MACs at 96 px); "
        "lite1, lite2: the deeper (and, lite2, wider) EfficientNet-Lite1/Lite2, the same way (~1.3x and ~1.5x "
        "Lite0's MACs at the same size); compact: a small CNN from scratch or taught by --teacher (fast, a few M MACs)",
    )
    add_input_options(parser)
    add_teacher_options(parser)
    add_recipe_options(parser)
    add_split_and_export_options(parser)
    add_quiet_option(parser)
    parser.set_defaults(handler=fit)


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """What the model sees: the card's input section."""
    parser.add_argument(
        "--window-px",
        type=positive_int,
        default=InputSpec.window_px,
        help="window around the cell, pixels (%(default)s)",
    )
    parser.add_argument("--size", type=positive_int, default=96, help="model input side, pixels (%(default)s)")
    parser.add_argument(
        "--pixel-size-um",
        type=pixel_size_arg,
        metavar="UM",
        help="micrometres per pixel of the training images; with pipeline.pixel_size_um on the rig, the Pi "
        "rescales its window to the same field (default: unknown; then run and doctor compare cell areas instead)",
    )
    parser.add_argument(
        "--intensity",
        choices=INTENSITY_MODES,
        default=InputSpec.intensity,
        help="keep each cell's grey levels (raw, the default; training varies offset, gain and contrast so that "
        "lamp and camera matter little) or map each cell to a standard mean and spread (standardised)",
    )


def add_teacher_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher",
        type=Path,
        metavar="MODEL",
        help="learn from this model's answers as well as the labels (its NAME.distill.npz, written by a fit with "
        "--distill-views; needs --cv and the same data: each fold learns from the same fold's teacher)",
    )
    parser.add_argument(
        "--distill-views",
        type=positive_int,
        metavar="K",
        help="also score K fixed augmented views of every cell with every model trained (folds and final) into "
        "NAME.distill.npz, for a later --teacher NAME (needs --cv)",
    )


def add_split_and_export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--test-fraction",
        type=probability_arg,
        default=TEST_FRACTION,
        help="without --cv: test groups' share (%(default)s)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=probability_arg,
        default=VALIDATION_FRACTION,
        help="with --patience: validation groups' share (%(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=probability_arg,
        default=THRESHOLD,
        help="positive at or above this probability (%(default)s)",
    )
    parser.add_argument(
        "--min-agreement",
        type=probability_arg,
        default=MIN_INT8_AGREEMENT,
        help="int8 vs float label agreement bar (%(default)s)",
    )
    parser.add_argument(
        "--min-group-auc",
        type=probability_arg,
        default=None,
        metavar="AUC",
        help="refuse the model (exit 6, nothing written at --out) when a held-out group's ROC AUC is below AUC: "
        "on such a culture it calls cells backwards or at random (`make model` uses 0.6; default: no floor)",
    )
    parser.add_argument(
        "--max-bad-fraction",
        type=float,
        default=DEFAULT_MAX_BAD_FRACTION,
        help="share of unreadable files tolerated (%(default)s)",
    )
    parser.add_argument("--no-leak-check", action="store_true", help="skip the file-level split comparison fit")


def fit_settings(args: argparse.Namespace) -> FitSettings:
    """The backbone's recipe with what the command line set explicitly."""
    settings = recipe(args.backbone, **{name: getattr(args, name) for name in RECIPE_OPTIONS})
    if settings.patience < 0:
        raise UsageError(f"--patience must be 0 (fixed epochs) or more, got {settings.patience}")
    if settings.early_stopping and settings.min_epochs >= settings.epochs:
        settings = replace(settings, min_epochs=settings.epochs - 1)
    if settings.backbone == "compact" and args.size < 2 ** len(settings.widths):
        raise UsageError(f"--size {args.size} is too small for {len(settings.widths)} stride-2 stages")
    if settings.backbone in LITE_BACKBONES and args.size < 32:
        raise UsageError(f"--size {args.size} is too small for {settings.backbone} (5 stride-2 stages; at least 32)")
    return settings


def fit_request(args: argparse.Namespace) -> FitRequest:
    """The FitRequest (train/make_model.py) the command line asks for, checked; its labels are
    checked before TensorFlow takes its seconds to load."""
    from edge.classify.native_noise import native_noise_filtered
    from train.dataset import label_folders, resolve_labels

    resolve_labels(label_folders(args.data_dir), args.positive)
    with native_noise_filtered():  # TensorFlow's import banner
        from train.make_model import FitRequest

    if args.frames and not (args.cv or args.cv_folds):
        raise UsageError("--frames needs --cv: each fold's model is scored per tracked cell on its held-out group")
    if (args.teacher or args.distill_views) and not (args.cv or args.cv_folds):
        raise UsageError("--teacher and --distill-views need --cv: each fold's student learns from its own teacher")
    return FitRequest(
        data_dir=args.data_dir,
        out=args.out,
        # Every cell is masked: a pre-masked crop by its black background, an unmasked one by the
        # Pi's detector (edge.classify.preprocess.crop_cell; the card's data.crops counts which were which).
        spec=InputSpec(
            size=args.size,
            channels=1,
            window_px=args.window_px,
            masked_background=True,
            pixel_size_um=args.pixel_size_um,
            intensity=args.intensity,
        ),
        settings=fit_settings(args),
        positive=args.positive,
        group_by=args.group_by,
        cv=args.cv or args.cv_folds is not None,
        cv_folds=args.cv_folds,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        leak_check=not args.no_leak_check,
        threshold=args.threshold,
        min_agreement=args.min_agreement,
        min_group_auc=args.min_group_auc,
        max_bad_fraction=args.max_bad_fraction,
        teacher=args.teacher,
        distill_views=args.distill_views,
        frames=args.frames,
        argv=args.argv,
    )


def fit(args: argparse.Namespace) -> int:
    request = fit_request(args)
    from train.make_model import make_model  # loaded by fit_request

    card = make_model(request)
    print(headline(card.to_dict()))
    return ExitCode.OK


def headline(card: dict[str, Any]) -> str:
    evaluation = card["evaluation"]
    cv = evaluation.get("cross_validation")
    if cv:
        s = cv["summary"]
        held = (
            f"cross-validated ({cv['rule']}): ROC AUC {s['roc_auc']['mean']:.3f} ± {s['roc_auc']['sd']:.3f}, "
            f"balanced accuracy {s['balanced_accuracy']['mean']:.3f} ± {s['balanced_accuracy']['sd']:.3f}"
        )
    else:
        m = evaluation["held_out"]
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        split = evaluation["split"]
        parts = split["groups"]
        tested, total = parts["test"], sum(len(groups) for groups in parts.values())
        cells = f"{split['test_cells']} of {split['cells']} cells ({split['test_cells'] / split['cells']:.0%})"
        # One split's figure rests on its few test groups: say how few, and what gives more.
        held = (
            f"held-out test groups: ROC AUC {auc}, balanced accuracy {m['balanced_accuracy']:.3f}, resting on "
            f"{len(tested)} test group(s) of {total} ({', '.join(tested)}), {cells}; the model written learnt "
            "from every cell; --cv tests every group in turn"
        )
    fidelity = card["int8_fidelity"]
    return f"{card['name']}: {held}; int8 agreement {fidelity['label_agreement']:.2%}"
