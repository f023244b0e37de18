"""`metascope-train evaluate`: an exported int8 model through the Pi's own Classifier on a
labelled folder: accuracy, balanced accuracy, ROC AUC, confusion, calibration, per group."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.commands.common import folder_arg
from edge.errors import ExitCode, UsageError
from train import progress
from train.progress import add_quiet_option


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="evaluate an exported int8 model on a labelled folder",
        description="Run MODEL.tflite through the Pi's own Classifier on every cell of DATA_DIR (label folders "
        "named as the model's labels) and print accuracy, balanced accuracy, ROC AUC, sensitivity, "
        "specificity, confusion matrix, calibration and per-group figures.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL.tflite")
    parser.add_argument("data_dir", type=folder_arg, metavar="DATA_DIR")
    parser.add_argument("--group-by", help="as for fit: folder level or regular expression")
    parser.add_argument("--groups", help="evaluate only these groups (comma-separated)")
    parser.add_argument(
        "--label-map",
        type=label_map_arg,
        action="append",
        metavar="FOLDER=LABEL",
        help="a label folder named apart from the model's label, e.g. MDA231=MDA-MB-231 (repeat for each)",
    )
    parser.add_argument(
        "--frames",
        action="store_true",
        help="also score per tracked cell: compose the (masked) crops into frames, each field shown --repeats "
        "times with jitter and fresh noise, run them through the Pi's detection, tracking and views, and score "
        "each tracked cell's logged call against the crop it was made of, beside the crop-level figures",
    )
    parser.add_argument("--repeats", type=positive_int, default=24, help="--frames: frames each field is shown (24)")
    parser.add_argument("--seed", type=int, default=0, help="--frames: seed of the composition and noise (0)")
    parser.add_argument(
        "--lamp",
        action="store_true",
        help="also measure the share of calls a 20 %% dimmer to 25 %% brighter lamp changes (each crop on its "
        "background, the whole frame relit, then the Pi's detector), beside the share a second frame of the same "
        "cell changes, as the model card does",
    )
    parser.add_argument("--out", type=Path, help="also write OUT.json, OUT.md and OUT.png")
    add_quiet_option(parser)
    parser.set_defaults(handler=evaluate)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def label_map_arg(text: str) -> tuple[str, str]:
    folder, sep, label = text.partition("=")
    if not sep or not folder.strip() or not label.strip():
        raise argparse.ArgumentTypeError(f"must be FOLDER=LABEL, e.g. MDA231=MDA-MB-231, got {text!r}")
    return folder.strip(), label.strip()


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
    from train.evaluate import one_label_recall

    for label, recall in (one_label_recall(metrics, labels) or {}).items():
        called = c["tp"] if label == labels[1] else c["tn"]
        lines.append(
            f"{label} only: recall {show(recall)} ({called} of {metrics['n']} {label} cells called {label}); "
            "ROC AUC and balanced accuracy need cells of both labels"
        )
    for group, m in metrics.get("per_group", {}).items():
        lines.append(
            f"  {group}: cells {m['n']} ({labels[1]} {m['positives']}), accuracy {show(m['accuracy'])}, "
            f"balanced accuracy {show(m['balanced_accuracy'])}, ROC AUC {show(m['roc_auc'])}"
        )
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> int:
    from edge.classify.classifier import Classifier
    from edge.classify.native_noise import native_noise_filtered

    with native_noise_filtered():  # TensorFlow's import banner, where plotting brings it in
        from train.evaluate import evaluate_classifier, inputs_note, load_for_model, training_overlap

    if not args.frames and (args.repeats != 24 or args.seed != 0):
        raise UsageError("--repeats and --seed go with --frames")
    classifier = Classifier.load(args.model)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    dataset = load_for_model(classifier, args.data_dir, args.group_by, groups, dict(args.label_map or []))
    metrics = evaluate_classifier(classifier, dataset)
    print(f"{classifier.path} on {args.data_dir}" + (f" (groups {', '.join(groups)})" if groups else ""))
    if dataset.group_pairs:
        print(dataset.group_pairs)
    print(format_metrics(metrics, classifier.labels))
    for note in [*crop_notes(classifier, dataset), inputs_note(classifier.card.extra)]:
        if note:
            print(f"note: {note}")
    overlap = training_overlap(classifier.card.extra, dataset)
    if overlap:
        print(overlap)
    if dataset.skipped:
        print(f"{len(dataset.skipped)} file(s) skipped (listed on stderr)")
    lamp = lamp_check(classifier, dataset) if args.lamp else None
    frames = evaluate_tracked_cells(classifier, dataset, args.repeats, args.seed) if args.frames else None
    if args.out:
        write_evaluation(args.out, classifier, dataset, metrics, overlap, frames, lamp)
    return ExitCode.OK


def lamp_check(classifier: Any, dataset: Any) -> dict[str, Any]:
    """--lamp: print how many calls another lamp changes on these cells; the record for --out."""
    from train.report import lamp_sentence
    from train.robustness import exposure_sensitivity

    exposure = exposure_sensitivity(classifier, dataset)
    print(f"lamp check: the {lamp_sentence(exposure)}")
    return exposure


def evaluate_tracked_cells(classifier: Any, dataset: Any, repeats: int, seed: int) -> dict[str, Any]:
    """--frames: print the per-tracked-cell figures beside the crop-level ones for the same crops;
    the record (with ``text``, what was printed) for --out."""
    from tqdm import tqdm

    from train.frames_evaluate import FramesSettings, evaluate_frames, format_counts

    settings = FramesSettings(repeats=repeats, seed=seed)
    bar = tqdm(desc="composed frames", unit="frame", disable=not progress.shown(), file=sys.stderr, leave=False)
    try:
        result = evaluate_frames(classifier, dataset, settings, on_frame=lambda _: bar.update())
    finally:
        bar.close()
    labels = classifier.labels
    lines = [
        "per tracked cell (frames through the Pi's detection, tracking and views): "
        + format_counts(result.counts, result.frames, settings)
    ]
    if result.cell_metrics is None or result.matched_crop_metrics is None:
        lines.append("no tracked cell could be scored")
    else:
        lines += [
            "crop level, the crops a scored cell was matched to:",
            format_metrics(result.matched_crop_metrics, labels),
            "per tracked cell (the call the Pi logs: the mean logit of its views):",
            format_metrics(result.cell_metrics, labels),
            gap_line(result.matched_crop_metrics, result.cell_metrics),
        ]
    text = "\n".join(lines)
    print(f"\n{text}")
    return {**result.as_dict(), "text": text}


def gap_line(crop: dict[str, Any], cell: dict[str, Any]) -> str:
    def change(key: str) -> str:
        if crop[key] is None or cell[key] is None:
            return "n/a"
        return f"{cell[key] - crop[key]:+.3f}"

    return (
        f"per tracked cell minus crop level (same crops): ROC AUC {change('roc_auc')}, "
        f"balanced accuracy {change('balanced_accuracy')}"
    )


def crop_notes(classifier: Any, dataset: Any) -> list[str]:
    """Images holding several cells, and crops unlike the training cells (edge/classify/survey.py)."""
    from edge.classify.survey import CropSurvey

    areas = [] if dataset.areas is None else dataset.areas.tolist()
    windows = [] if dataset.windows is None else list(dataset.windows)
    return CropSurvey.of(areas, windows, dataset.crowded).notes(classifier.card.extra)


def write_evaluation(
    out: Path,
    classifier: Any,
    dataset: Any,
    metrics: dict[str, Any],
    overlap: str | None = None,
    frames: dict[str, Any] | None = None,
    lamp: dict[str, Any] | None = None,
) -> None:
    from train.evaluate import one_label_recall
    from train.plots import evaluation_figure
    from train.report import lamp_sentence

    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": str(classifier.path),
        "sha256": classifier.sha256,
        "data_dir": str(dataset.root),
        "skipped_files": [reason for _, reason in dataset.skipped],
        "trained_on_these_cells": overlap,
        "crops": dataset.crop_kinds,
        "metrics": metrics,
        "recall": one_label_recall(metrics, classifier.labels),
        "frames": frames,
        "lamp": lamp,
    }
    json_path = out.with_name(out.name + ".json")
    json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    png = out.with_name(out.name + ".png")
    p = classifier.predict(dataset.images)
    evaluation_figure(png, dataset.y, p, metrics, classifier.labels, f"{classifier.card.name} on {dataset.root.name}")
    md = out.with_name(out.name + ".md")
    md.write_text(
        f"# {classifier.card.name} on {dataset.root}\n\n```\n{format_metrics(metrics, classifier.labels)}\n```\n\n"
        f"![ROC, confusion, reliability]({png.name})\n"
        + (f"\n## Per tracked cell\n\n```\n{frames['text']}\n```\n" if frames else "")
        + (f"\n## Lamp and exposure\n\nThe {lamp_sentence(lamp)}.\n" if lamp else ""),
        encoding="utf-8",
    )
    print(f"wrote {json_path}, {md}, {png}")
