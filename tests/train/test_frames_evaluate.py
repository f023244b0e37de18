"""`metascope-train evaluate --frames`: a model scored per tracked cell, on frames composed from a
labelled folder's crops and run through the Pi's detection, tracking and views, beside the
crop-level figures for the same crops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.capture.composed import compose_fields
from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.classify.classifier import Classifier
from train.cli import main
from train.evaluate import load_for_model
from train.frames_evaluate import SCORED, FramesSettings, composed_crops, evaluate_frames

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fayyaz-mda231-pc3"
FAST_MODEL = Path(__file__).resolve().parents[2] / "models" / "mda231-pc3-fast.tflite"


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """round/round_g<N>/, spindle/spindle_g<N>/: masked crops of the tiny model's two labels."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells"), per_group=10, groups=2, seed=8)


def test_each_tracked_cell_is_matched_to_the_crop_it_was_composed_from(tiny_model, cells: Path) -> None:
    classifier = Classifier.load(tiny_model[0])
    dataset = load_for_model(classifier, cells)
    settings = FramesSettings(repeats=24, seed=3)
    result = evaluate_frames(classifier, dataset, settings)

    # Where each crop was placed, each group composed again from the same seed (the composer is
    # deterministic; a group's frames hold its crops alone).
    crops = composed_crops(dataset)
    where = {}
    for group in set(dataset.groups.tolist()):
        ours = [crop for crop in crops if dataset.groups[int(crop.source)] == group]
        for composed in compose_fields(ours, settings.compose()):
            where.update({int(obj.members[0].source): obj.bbox for obj in composed.objects})
    scored = [call for call in result.cells if call.outcome == SCORED]
    assert len(scored) >= 0.9 * len(dataset), result.counts
    for call in scored:
        y0, x0, y1, x1 = where[call.crop]
        y, x = call.cell.centroid_yx
        assert y0 <= y < y1 and x0 <= x < x1, f"cell {call.cell.track} lies outside crop {call.crop}'s box"
        assert call.cell.views == 8  # a still field of 24 frames serves every view the cell is owed
    assert result.counts["crops_composed"] == len(dataset) == 40
    assert result.counts["crops_matched"] + result.counts["crops_missed"] + result.counts[
        "crops_only_as_cluster"
    ] == len(dataset)
    assert result.cell_metrics["n"] == len(scored)


def test_the_per_cell_figures_follow_the_models_calls(tiny_model, cells: Path) -> None:
    """The same frames with the model's every answer turned round (p -> 1 - p): the per-cell ROC
    AUC turns round too, so the figures come from the tracked cells' calls, not the crops."""
    classifier = Classifier.load(tiny_model[0])
    dataset = load_for_model(classifier, cells)
    plain = evaluate_frames(classifier, dataset)
    answer = classifier.predict
    classifier.predict = lambda batch, check=True: 1.0 - answer(batch, check)  # type: ignore[method-assign]
    turned = evaluate_frames(classifier, dataset)

    assert plain.counts == turned.counts  # detection and tracking do not depend on the model's answers
    assert plain.cell_metrics["roc_auc"] > 0.9
    assert turned.cell_metrics["roc_auc"] == pytest.approx(1.0 - plain.cell_metrics["roc_auc"])
    assert turned.cell_metrics["balanced_accuracy"] < 0.1


def test_evaluate_frames_prints_and_records_both_figures(tiny_model, cells: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_model[0]), str(cells), "--frames", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.with_name("eval.json").read_text())["frames"]
    counts = record["counts"]
    assert f"tracked cells {counts['tracked_cells']}: scored {counts['tracked_cells_scored']}" in printed
    cell, crop = record["per_tracked_cell"], record["crop_level_matched"]
    gap = cell["roc_auc"] - crop["roc_auc"]
    assert f"per tracked cell minus crop level (same crops): ROC AUC {gap:+.3f}" in printed
    assert "## Per tracked cell" in out.with_name("eval.md").read_text()


def test_repeats_without_frames_is_refused(tiny_model, cells: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_model[0]), str(cells), "--repeats", "10", "--quiet"]) == 2
    assert "--repeats and --seed go with --frames" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"needs the shared data set at {SHARED} (not in the repository)")
def test_real_crops_are_tracked_and_matched(tmp_path: Path) -> None:
    """Real masked crops of one condition (10 of each line) through the shipped fast model."""
    for line in ("MDA-MB-231", "PC3"):
        source = next(p for p in sorted((SHARED / line).iterdir()) if p.name.endswith("40kD1"))
        folder = tmp_path / line / source.name
        folder.mkdir(parents=True)
        for image in sorted(source.glob("*.png"))[:10]:
            shutil.copy(image, folder / image.name)
    classifier = Classifier.load(FAST_MODEL)
    dataset = load_for_model(classifier, tmp_path)
    result = evaluate_frames(classifier, dataset, FramesSettings(repeats=24))
    scored = [call for call in result.cells if call.outcome == SCORED]
    assert result.counts["crops_matched"] >= 16, result.counts
    assert {call.cell.views for call in scored} == {8}
    assert np.isfinite(result.cell_metrics["roc_auc"])


# The compact CNN at 32 px, small and quick (as tests/train/test_train_fit.py's TINY).
TINY_FIT = ["--backbone", "compact", "--size", "32", "--window-px", "128", "--widths", "8,16", "--epochs", "12",
            "--learning-rate", "0.005", "--min-agreement", "0.95", "--pooling", "avg", "--intensity", "standardised",
            "--quiet"]  # fmt: skip


def test_fit_frames_puts_each_folds_per_tracked_cell_figure_in_the_card_and_report(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "cells", per_group=8, groups=3, seed=5)
    out = tmp_path / "cv"
    fit = ["fit", str(data), "--out", str(out), "--group-by", r"_(g\d+)/", "--cv", "--frames", "--no-leak-check"]
    assert main([*fit, *TINY_FIT]) == 0
    cv = json.loads(out.with_suffix(".json").read_text())["evaluation"]["cross_validation"]
    for fold in cv["folds"]:
        cell = fold["per_tracked_cell"]
        assert cell["counts"]["crops_composed"] == fold["n"] == 16
        assert cell["counts"]["tracked_cells_scored"] >= 14
        assert cell["crop_roc_auc"] is not None and cell["roc_auc"] is not None
    summary = cv["per_tracked_cell_summary"]
    assert summary["roc_auc"]["mean"] == pytest.approx(np.mean([f["per_tracked_cell"]["roc_auc"] for f in cv["folds"]]))
    report = out.with_name("cv.report.md").read_text()
    assert f"ROC AUC {summary['roc_auc']['mean']:.3f} per tracked cell" in report


def test_fit_frames_without_cv_is_refused(cells: Path, tmp_path: Path, capsys) -> None:
    assert main(["fit", str(cells), "--out", str(tmp_path / "m"), "--frames", *TINY_FIT]) == 2
    assert "--frames needs --cv" in capsys.readouterr().err
