"""The `metascope-train` command: `fit` a model from a labelled folder, `evaluate` an exported one.

Exit status: 0 done; 2 bad arguments or unusable data (the message says what is wrong);
3 the int8 export was refused by the fidelity check; 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.preprocess import INTENSITY_MODES
from train.recipe import BACKBONES

EXIT_USAGE = 2
EXIT_EXPORT_REFUSED = 3


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated whole numbers, e.g. 16,32,64, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"every width must be at least 1, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metascope-train", description="Train and evaluate metascope's cell classifier (int8 TFLite)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser(
        "fit",
        help="train a model from DATA_DIR/<label>/.../<image> and export it",
        description="Train from a folder with exactly two label folders; split by group (never by file); "
        "export int8 + float TFLite, the model card and an evaluation report.",
    )
    fit.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    fit.add_argument("--out", type=Path, required=True, help="output NAME or NAME.tflite (e.g. models/mda231-pc3)")
    fit.add_argument("--positive", help="the positive label (folder name); default: the second label folder")
    fit.add_argument(
        "--group-by",
        help="the unit splits never cut: N = the N-th folder below the label folder (default 1), or a regular "
        "expression on the path whose first group names the group, e.g. '(\\d+kD\\d)'",
    )
    fit.add_argument("--cv", action="store_true", help="cross-validate by group first; the card's numbers come from it")
    fit.add_argument("--cv-folds", type=_positive_int, help="K grouped folds instead of leave-one-group-out")
    fit.add_argument(
        "--backbone",
        choices=BACKBONES,
        default="lite0",
        help="lite0: EfficientNet-Lite0 fine-tuned from ImageNet (the default; accurate, ~70 M MACs at 96 px); "
        "compact: a small CNN from scratch or taught by --teacher (fast, a few M MACs)",
    )
    fit.add_argument("--window-px", type=_positive_int, default=192, help="window around the cell, pixels (192)")
    fit.add_argument("--size", type=_positive_int, default=96, help="model input side, pixels (96)")
    fit.add_argument(
        "--intensity",
        choices=INTENSITY_MODES,
        default="raw",
        help="keep each cell's grey levels (raw, the default; training varies offset, gain and contrast so that "
        "lamp and camera matter little) or map each cell to a standard mean and spread (standardised)",
    )
    fit.add_argument(
        "--teacher",
        type=Path,
        metavar="MODEL",
        help="learn from this model's answers as well as the labels (its NAME.distill.npz, written by a fit with "
        "--distill-views; needs --cv and the same data: each fold learns from the same fold's teacher)",
    )
    fit.add_argument(
        "--distill-views",
        type=_positive_int,
        metavar="K",
        help="also score K fixed augmented views of every cell with every model trained (folds and final) into "
        "NAME.distill.npz, for a later --teacher NAME (needs --cv)",
    )
    recipe_note = "default: the backbone's recipe"
    fit.add_argument("--widths", type=_widths, help=f"compact: conv stage widths, e.g. 16,32,64,96 ({recipe_note})")
    fit.add_argument("--convs-per-stage", type=_positive_int, help=f"compact: convolutions per stage ({recipe_note})")
    fit.add_argument("--pooling", choices=("avg", "avg+max"), help=f"compact: global pooling ({recipe_note})")
    fit.add_argument("--epochs", type=_positive_int, help=f"epochs per fit; the most with --patience ({recipe_note})")
    fit.add_argument(
        "--patience",
        type=int,
        help="0: train exactly --epochs, folds exactly like the final fit; N: stop after N epochs without a better "
        f"validation AUC, on validation groups held back ({recipe_note})",
    )
    fit.add_argument("--min-epochs", type=int, help=f"with --patience: epochs before stopping may act ({recipe_note})")
    fit.add_argument("--batch-size", type=_positive_int, help=recipe_note)
    fit.add_argument("--learning-rate", type=float, help=f"peak learning rate ({recipe_note})")
    fit.add_argument("--dropout", type=float, help=recipe_note)
    fit.add_argument("--label-smoothing", type=float, help=recipe_note)
    fit.add_argument("--teacher-weight", type=_fraction, help=f"with --teacher: the teacher's share ({recipe_note})")
    fit.add_argument("--no-class-weights", action="store_true", help="do not weight classes by inverse frequency")
    fit.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--test-fraction", type=_fraction, default=0.2, help="without --cv: test groups' share")
    fit.add_argument(
        "--validation-fraction", type=_fraction, default=0.15, help="with --patience: validation groups' share"
    )
    fit.add_argument("--threshold", type=_fraction, default=0.5, help="positive at or above this probability")
    fit.add_argument("--min-agreement", type=_fraction, default=0.99, help="int8 vs float label agreement bar")
    fit.add_argument("--max-bad-fraction", type=float, default=0.05, help="share of unreadable files tolerated")
    fit.add_argument("--no-leak-check", action="store_true", help="skip the file-level split comparison fit")
    fit.add_argument("--quiet", action="store_true", help="no progress display")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate an exported int8 model on a labelled folder",
        description="Run MODEL.tflite through the Pi's own Classifier on every cell of DATA_DIR (label folders "
        "named as the model's labels) and print accuracy, balanced accuracy, ROC AUC, sensitivity, "
        "specificity, confusion matrix, calibration and per-group figures.",
    )
    evaluate.add_argument("model", type=Path, metavar="MODEL.tflite")
    evaluate.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    evaluate.add_argument("--group-by", help="as for fit: folder level or regular expression")
    evaluate.add_argument("--groups", help="evaluate only these groups (comma-separated)")
    evaluate.add_argument("--out", type=Path, help="also write OUT.json, OUT.md and OUT.png")
    evaluate.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def fit_settings(args: argparse.Namespace) -> Any:
    """The backbone's recipe with what the command line set explicitly."""
    from train.augment import NO_AUGMENTATION
    from train.recipe import recipe

    settings = recipe(
        args.backbone,
        widths=args.widths,
        convs_per_stage=args.convs_per_stage,
        pooling=args.pooling,
        dropout=args.dropout,
        epochs=args.epochs,
        patience=args.patience,
        min_epochs=args.min_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        label_smoothing=args.label_smoothing,
        teacher_weight=args.teacher_weight,
        class_weighting=False if args.no_class_weights else None,
        seed=args.seed,
        augment=NO_AUGMENTATION if args.no_augment else None,
    )
    if settings.patience < 0:
        raise ValueError(f"--patience must be 0 (fixed epochs) or more, got {settings.patience}")
    if settings.early_stopping and settings.min_epochs >= settings.epochs:
        settings = replace(settings, min_epochs=settings.epochs - 1)
    if settings.backbone == "compact" and args.size < 2 ** len(settings.widths):
        raise ValueError(f"--size {args.size} is too small for {len(settings.widths)} stride-2 stages")
    if settings.backbone == "lite0" and args.size < 32:
        raise ValueError(f"--size {args.size} is too small for lite0 (5 stride-2 stages; at least 32)")
    return settings


def run_fit_command(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from edge.preprocess import InputSpec
    from train.fit_command import FitRequest, run_fit

    if (args.teacher or args.distill_views) and not (args.cv or args.cv_folds):
        raise ValueError("--teacher and --distill-views need --cv: each fold's student learns from its own teacher")
    request = FitRequest(
        data_dir=args.data_dir,
        out=args.out,
        spec=InputSpec(
            size=args.size, channels=1, window_px=args.window_px, masked_background=True, intensity=args.intensity
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
        max_bad_fraction=args.max_bad_fraction,
        teacher=args.teacher,
        distill_views=args.distill_views,
        progress=not args.quiet,
        argv=None if argv is None else list(argv),
    )
    card = run_fit(request)
    print(headline(card.to_dict()))
    return 0


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
        held = f"held-out test groups: ROC AUC {auc}, balanced accuracy {m['balanced_accuracy']:.3f}"
    fidelity = card["int8_fidelity"]
    return f"{card['name']}: {held}; int8 agreement {fidelity['label_agreement']:.2%}"


def format_metrics(metrics: dict[str, Any], labels: tuple[str, str]) -> str:
    def show(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    c = metrics["confusion"]
    lines = [
        f"cells {metrics['n']} ({labels[1]} {metrics['positives']}), threshold {metrics['threshold']:.2f}",
        f"accuracy {show(metrics['accuracy'])}  balanced accuracy {show(metrics['balanced_accuracy'])}  "
        f"ROC AUC {show(metrics['roc_auc'])}",
        f"sensitivity {show(metrics['sensitivity'])}  specificity {show(metrics['specificity'])}  "
        f"ECE {show(metrics.get('ece'))}",
        f"confusion (true -> called): {labels[0]}->{labels[0]} {c['tn']}  {labels[0]}->{labels[1]} {c['fp']}  "
        f"{labels[1]}->{labels[0]} {c['fn']}  {labels[1]}->{labels[1]} {c['tp']}",
    ]
    for group, m in metrics.get("per_group", {}).items():
        lines.append(
            f"  {group}: cells {m['n']} ({labels[1]} {m['positives']}), accuracy {show(m['accuracy'])}, "
            f"balanced accuracy {show(m['balanced_accuracy'])}, ROC AUC {show(m['roc_auc'])}"
        )
    return "\n".join(lines)


def run_evaluate_command(args: argparse.Namespace) -> int:
    from edge.model import Classifier
    from train.evaluate import evaluate_classifier, load_for_model

    classifier = Classifier.load(args.model)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    dataset = load_for_model(classifier, args.data_dir, args.group_by, groups, progress=not args.quiet)
    metrics = evaluate_classifier(classifier, dataset)
    print(f"{classifier.path} on {args.data_dir}" + (f" (groups {', '.join(groups)})" if groups else ""))
    print(format_metrics(metrics, classifier.labels))
    if dataset.skipped:
        print(f"{len(dataset.skipped)} unreadable file(s) skipped (listed on stderr)")
    if args.out:
        write_evaluation(args.out, classifier, dataset, metrics)
    return 0


def write_evaluation(out: Path, classifier: Any, dataset: Any, metrics: dict[str, Any]) -> None:
    from train.plots import evaluation_figure

    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": str(classifier.path),
        "sha256": classifier.sha256,
        "data_dir": str(dataset.root),
        "skipped_files": [reason for _, reason in dataset.skipped],
        "metrics": metrics,
    }
    json_path = out.with_name(out.name + ".json")
    json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    png = out.with_name(out.name + ".png")
    p = classifier.predict(dataset.images)
    evaluation_figure(png, dataset.y, p, metrics, classifier.labels, f"{classifier.card.name} on {dataset.root.name}")
    md = out.with_name(out.name + ".md")
    md.write_text(
        f"# {classifier.card.name} on {dataset.root}\n\n```\n{format_metrics(metrics, classifier.labels)}\n```\n\n"
        f"![ROC, confusion, reliability]({png.name})\n",
        encoding="utf-8",
    )
    print(f"wrote {json_path}, {md}, {png}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edge.card import ModelError
    from train.dataset import DatasetError
    from train.split import SplitError

    try:
        if args.command == "fit":
            from train.export import ExportError

            try:
                return run_fit_command(args, argv)
            except ExportError as exc:
                print(f"metascope-train: export refused: {exc}", file=sys.stderr)
                return EXIT_EXPORT_REFUSED
        return run_evaluate_command(args)
    except (DatasetError, SplitError, ModelError, ValueError) as exc:
        print(f"metascope-train: {exc}", file=sys.stderr)
        return EXIT_USAGE
