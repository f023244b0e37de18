"""NAME.report.md beside the model: every figure a user needs to judge it, from its card."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def metrics_table(metrics: dict[str, Any], labels: list[str]) -> list[str]:
    c = metrics["confusion"]
    negative, positive = labels
    return [
        "| metric | value |",
        "| --- | --- |",
        f"| cells (of which {positive}) | {metrics['n']} ({metrics['positives']}) |",
        f"| accuracy | {_f(metrics['accuracy'])} |",
        f"| balanced accuracy | {_f(metrics['balanced_accuracy'])} |",
        f"| ROC AUC | {_f(metrics['roc_auc'])} |",
        f"| sensitivity ({positive} called {positive}) at {metrics['threshold']:.2f} | {_f(metrics['sensitivity'])} |",
        f"| specificity ({negative} called {negative}) at {metrics['threshold']:.2f} | {_f(metrics['specificity'])} |",
        f"| expected calibration error (10 bins) | {_f(metrics.get('ece'))} |",
        "",
        f"Confusion matrix at threshold {metrics['threshold']:.2f} (rows: true, columns: called):",
        "",
        f"| | called {negative} | called {positive} |",
        "| --- | --- | --- |",
        f"| **{negative}** | {c['tn']} | {c['fp']} |",
        f"| **{positive}** | {c['fn']} | {c['tp']} |",
    ]


def per_group_table(per_group: dict[str, dict[str, Any]], labels: list[str]) -> list[str]:
    lines = [
        f"| group | cells | {labels[1]} | accuracy | balanced accuracy | ROC AUC |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for group, m in per_group.items():
        lines.append(
            f"| {group} | {m['n']} | {m['positives']} | {_f(m['accuracy'])} | {_f(m['balanced_accuracy'])} "
            f"| {_f(m['roc_auc'])} |"
        )
    return lines


def write_report(
    path: str | os.PathLike[str],
    card: dict[str, Any],
    held_out: dict[str, Any],
    figures: dict[str, str],
) -> Path:
    """``card``: the model card as written; ``held_out``: full metrics (with calibration and
    per-group) of the held-out predictions the headline numbers come from; ``figures``:
    caption -> PNG file name beside the report."""
    labels = card["labels"]
    evaluation = card["evaluation"]
    cv = evaluation.get("cross_validation")
    lines = introduction(card)
    if cv:
        lines += cross_validation_section(cv, card["training"], held_out, labels)
    else:
        lines += split_section(evaluation["split"], held_out, labels)
    if "per_group" in held_out:
        lines += ["Per held-out group:", "", *per_group_table(held_out["per_group"], labels), ""]
    for caption, name in figures.items():
        lines += [f"![{caption}]({name})", ""]
    lines += leak_section(evaluation.get("file_level_split"))
    lines += exposure_section(evaluation.get("exposure"))
    lines += shipped_model_section(card)
    lines += how_made_section(card)
    lines += data_section(card["data"], labels)
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def introduction(card: dict[str, Any]) -> list[str]:
    labels = card["labels"]
    return [
        f"# Model report: {card['name']}",
        "",
        f"Tells **{labels[0]}** from **{labels[1]}** (positive: {card['positive_label']}, threshold "
        f"{card['threshold']:.2f}) in single-cell images: a {card['input']['window_px']} px window around "
        f"the cell, background masked to 0, resized to {card['input']['size']}x{card['input']['size']}"
        + (
            ", each cell's grey levels standardised (mean and spread) so that lamp and exposure barely matter. "
            if card["input"].get("intensity") == "standardised"
            else ". "
        )
        + "A research instrument trained on a few cultures of two cell lines, not a diagnostic.",
        "",
        f"Created {card['created']} by `{card['training']['command']}`.",
        "",
    ]


def cross_validation_section(
    cv: dict[str, Any], training: dict[str, Any], held_out: dict[str, Any], labels: list[str]
) -> list[str]:
    s = cv["summary"]
    fixed_epochs = not training.get("settings", {}).get("patience")
    fold_training = (
        "for a fixed number of epochs, exactly like the final fit"
        if fixed_epochs
        else "early stopping on one further group held back as validation"
    )
    lines = [
        "## Held-out performance (cross-validation: the numbers to quote)",
        "",
        f"Split rule: {cv['rule']}. Each fold trains a fresh model on the other groups ({fold_training}), "
        "exports it to int8 and evaluates that int8 model on the held-out group through edge's Classifier. "
        "No cell is ever scored by a model that saw its group.",
        "",
        f"**ROC AUC {_f(s['roc_auc']['mean'])} ± {_f(s['roc_auc']['sd'])}, balanced accuracy "
        f"{_f(s['balanced_accuracy']['mean'])} ± {_f(s['balanced_accuracy']['sd'])}** "
        f"(mean ± sd over {s['roc_auc']['folds']} folds; AUC range {_f(s['roc_auc']['min'])}-"
        f"{_f(s['roc_auc']['max'])}).",
        "",
        "| held out | validation | cells | " + labels[1] + " | ROC AUC | balanced acc. | accuracy | sensitivity "
        "| specificity | ECE | best epoch | int8 agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fold in cv["folds"]:
        lines.append(
            f"| {fold['held_out']} | {', '.join(fold['groups']['validation'])} | {fold['n']} | {fold['positives']} "
            f"| {_f(fold['roc_auc'])} | {_f(fold['balanced_accuracy'])} | {_f(fold['accuracy'])} "
            f"| {_f(fold['sensitivity'])} | {_f(fold['specificity'])} | {_f(fold['ece'])} | {fold['best_epoch']} "
            f"| {_pct(fold['int8_label_agreement'])} |"
        )
    return [
        *lines,
        *tracked_cell_lines(cv),
        "",
        "All held-out cells pooled (each scored by the fold model that had not seen its group):",
        "",
        *metrics_table(held_out, labels),
        "",
    ]


def tracked_cell_lines(cv: dict[str, Any]) -> list[str]:
    """fit --frames: each fold's int8 model per tracked cell beside its crop level on the same crops."""
    s = cv.get("per_tracked_cell_summary")
    if not s:
        return []
    lines = [
        "",
        "Per tracked cell (`fit --frames`: each held-out group's crops composed into frames and run through the "
        "Pi's detection, tracking and views; the call its rig would log for each tracked cell, against the crop-"
        f"level figure on the same crops): **ROC AUC {_f(s['roc_auc']['mean'])} per tracked cell against "
        f"{_f(s['crop_roc_auc']['mean'])} per crop, balanced accuracy {_f(s['balanced_accuracy']['mean'])} against "
        f"{_f(s['crop_balanced_accuracy']['mean'])}** (mean over {s['roc_auc']['folds']} folds; worst per tracked "
        f"cell {_f(s['roc_auc']['min'])}).",
        "",
        "| held out | crop ROC AUC | per tracked cell ROC AUC | crop balanced acc. | per tracked cell balanced acc. "
        "| cells scored | clusters | crops missed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fold in cv["folds"]:
        cell = fold.get("per_tracked_cell")
        if cell is None:
            continue
        c = cell["counts"]
        lines.append(
            f"| {fold['held_out']} | {_f(cell['crop_roc_auc'])} | {_f(cell['roc_auc'])} "
            f"| {_f(cell['crop_balanced_accuracy'])} | {_f(cell['balanced_accuracy'])} | {c['tracked_cells_scored']} "
            f"| {c['tracked_cells_flagged_cluster']} | {c['crops_missed']} |"
        )
    return lines


def split_section(split: dict[str, Any], held_out: dict[str, Any], labels: list[str]) -> list[str]:
    return [
        "## Held-out performance (test split)",
        "",
        f"Split rule: {split['rule']}. Groups: train {', '.join(split['groups']['train'])}; validation "
        f"{', '.join(split['groups']['validation'])}; test {', '.join(split['groups']['test'])}. Measured "
        "on the int8 export of the same recipe trained without the test groups, through edge's Classifier; the "
        "shipped model (below) then learnt from every cell.",
        "",
        *metrics_table(held_out, labels),
        "",
    ]


def leak_section(leak: dict[str, Any] | None) -> list[str]:
    if not leak:
        return []
    return [
        "## What a leaky split would have claimed",
        "",
        f"The same training with a random split **by file** ({leak['test_cells']} test cells) reports ROC AUC "
        f"{_f(leak['roc_auc'])}, balanced accuracy {_f(leak['balanced_accuracy'])}, accuracy "
        f"{_f(leak['accuracy'])}. Crops of one culture are near-duplicates, so that figure measures "
        "recognising cultures already seen, not cells from a new one; it is shown only for comparison "
        "and was never used to choose anything.",
        "",
    ]


def exposure_section(exposure: dict[str, Any] | None) -> list[str]:
    if not exposure:
        return []
    return [
        "## Lamp and exposure",
        "",
        f"The {lamp_sentence(exposure)}. Cells are {exposure['cells_are']}.",
        "",
    ]


def lamp_sentence(exposure: dict[str, Any]) -> str:
    """The lamp check in a sentence, for the report and `evaluate --lamp`."""
    changed = ", ".join(
        f"{float(gain):.0%} lamp: {share:.1%}" for gain, share in exposure["label_changed_at_gain"].items()
    )
    lost = sum(exposure["cells_lost_at_gain"].values())
    return (
        f"share of the {exposure['cells']} cells whose label changes under a dimmer or brighter lamp (input "
        f"intensity: {exposure['intensity']}): {changed}; a second frame of the same cell under the same lamp "
        f"changes {exposure['label_changed_by_a_second_frame']:.1%} of them (sensor noise and a sub-pixel shift, on "
        f"the cells near the threshold)"
        + (f"; the detector lost {lost} cell frame(s) under another lamp" if lost else "")
    )


def shipped_model_section(card: dict[str, Any]) -> list[str]:
    final = card["evaluation"]["final_model"]
    fidelity = card["int8_fidelity"]
    lines = [
        "## The shipped model",
        "",
        f"{final['description']} Training took {final['seconds']:.0f} s ({final['epochs']} epochs); the whole "
        f"command {card['training']['wall_seconds']:.0f} s.",
        "",
        f"int8 vs float Keras on {fidelity['cells']} {fidelity['cells_are']}: same label for "
        f"{_pct(fidelity['label_agreement'])} (bar {_pct(fidelity['minimum_agreement'])}), mean |Δp| "
        f"{fidelity['mean_abs_probability_difference']:.4f}, "
        f"max |Δp| {fidelity['max_abs_probability_difference']:.4f}.",
        "",
    ]
    if final.get("per_group"):
        lines += [
            "Its own figures per group (on cells it was trained on when the fit used every group: a check that "
            "the artifact works, not an estimate of performance):",
            "",
            *per_group_table(final["per_group"], card["labels"]),
            "",
        ]
    return lines


def how_made_section(card: dict[str, Any]) -> list[str]:
    training = card["training"]
    arch = training["architecture"]
    return [
        "## How it was made",
        "",
        f"- Command: `{training['command']}`",
        f"- Architecture: {arch['description']}; {arch['macs_per_cell']:,} multiply-accumulates per cell, "
        f"{arch['parameters']:,} parameters; int8 file {card['file_bytes']:,} bytes.",
        f"- Settings: `{training['settings']}`",
        f"- Seed {training['settings']['seed']}; software: "
        + ", ".join(f"{k} {v}" for k, v in training["software"].items()),
        "",
    ]


def data_section(data: dict[str, Any], labels: list[str]) -> list[str]:
    return [
        "## Data",
        "",
        f"- Folder: `{data['root']}`; group rule: {data['group_rule']}",
        "- Cells: " + ", ".join(f"{k} {v}" for k, v in data["cells"].items()),
        inputs_line(data.get("served_inputs")),
        skipped_line(data),
        f"- Provenance: {data['provenance'] or 'not given (no SOURCE.txt in the data folder)'}",
        f"- Licence of the images: {data['licence'] or 'not stated'}",
        "",
        "| group | " + " | ".join(labels) + " |",
        "| --- | --- | --- |",
        *[
            f"| {group} | " + " | ".join(str(counts[label]) for label in labels) + " |"
            for group, counts in data["groups"].items()
        ],
        "",
    ]


def skipped_line(data: dict[str, Any]) -> str:
    """How many files the fit left out, and why: unreadable, or readable with no cell the Pi's
    detector finds (an unmasked crop at load, or a masked one in none of its served renderings)."""
    no_cell = (data.get("crops") or {}).get("unsegmentable", 0) + (data.get("served_inputs") or {}).get(
        "cells_left_out", 0
    )
    line = f"- Files skipped: {data['skipped_files']}"
    if data["skipped_files"]:
        line += f": {data['skipped_files'] - no_cell} unreadable, {no_cell} crop(s) the Pi's detector finds no cell in"
    return line + (" (" + "; ".join(data["skipped_examples"]) + ")" if data["skipped_examples"] else "")


def inputs_line(served: dict[str, Any] | None) -> str:
    if not served:
        return "- Inputs: each cell as the data set masked it (fit --inputs dataset), not as the Pi's detector masks it"
    return (
        f"- Inputs: each cell as the Pi serves it: {served['rule']} ({served['renderings']} renderings, "
        f"{served['unsegmentable_renderings']} left out; {served['cells_left_out']} cell(s) with none)"
    )


def write_refusal_report(
    path: Path, name: str, problem: str, held_out: dict[str, Any], labels: list[str], command: str
) -> Path:
    """NAME.report.md when the int8 export was refused: the held-out figures (they do not depend
    on the export) and what was kept, so a long fit is not lost."""
    lines = [
        f"# Model report: {name} (int8 export refused)",
        "",
        f"Made by `{command}`. **int8 export refused**: {problem}.",
        "",
        f"No int8 model was written (the Pi would run a classifier other than the one measured). The float "
        f"model is kept as `{name}.refused.float.tflite` with its card; `metascope-train evaluate` runs it. "
        f"A model already named {name} is left as it was.",
        "",
        "## Held-out performance (measured before the export)",
        "",
        *metrics_table(held_out, labels),
        "",
        "## What to try",
        "",
        "- fit again with another `--seed` (other weights, other calibration draws);",
        "- `--intensity standardised` (each cell mapped to one mean and spread: a narrower input range);",
        "- `--min-agreement` just below the agreement measured above, if that many changed calls are acceptable.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
