"""`metascope-train evaluate` on a lab's own folders: a new culture of one line (one label folder)
reports that line's recall; label folders named differently from the card map onto its labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.errors import ExitCode
from train.cli import main


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """round/round_g<N>/, spindle/spindle_g<N>/: the tiny model's two labels."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells"), per_group=10, groups=2, seed=8)


def test_a_folder_of_one_label_reports_that_lines_recall(tiny_model, cells: Path, tmp_path: Path, capsys) -> None:
    one = tmp_path / "new-culture"
    shutil.copytree(cells / "spindle", one / "spindle")
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_model[0]), str(one), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.with_name("eval.json").read_text())
    metrics = record["metrics"]
    assert metrics["n"] == metrics["positives"] == 20
    called = metrics["confusion"]["tp"]
    assert f"spindle only: recall {called / 20:.3f} ({called} of 20 spindle cells called spindle)" in printed
    assert record["recall"] == {"spindle": pytest.approx(called / 20)}


def test_label_folders_named_apart_from_the_card_map_onto_its_labels(
    tiny_model, cells: Path, tmp_path: Path, capsys
) -> None:
    renamed = tmp_path / "lab"
    shutil.copytree(cells / "round", renamed / "ROUND-cells")
    shutil.copytree(cells / "spindle", renamed / "spindle")
    assert main(["evaluate", str(tiny_model[0]), str(renamed), "--quiet"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "ROUND-cells" in err and "--label-map ROUND-cells=round" in err
    args = ["evaluate", str(tiny_model[0]), str(renamed), "--label-map", "ROUND-cells=round", "--quiet"]
    assert main(args) == 0
    mapped = capsys.readouterr().out
    assert main(["evaluate", str(tiny_model[0]), str(cells), "--quiet"]) == 0
    plain = capsys.readouterr().out
    # The same cells, the same figures: only the folder's name differed.
    assert mapped.splitlines()[1:] == plain.splitlines()[1:]


def test_a_label_map_onto_no_label_of_the_model_is_named(tiny_model, cells: Path, capsys) -> None:
    args = ["evaluate", str(tiny_model[0]), str(cells), "--label-map", "round=oval", "--quiet"]
    assert main(args) == ExitCode.USAGE
    assert "oval" in capsys.readouterr().err


def test_evaluate_says_when_images_hold_several_cells(tiny_model, cells: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from edge.capture.synthetic import add_sensor_noise, render_field

    folder = tmp_path / "lab"
    shutil.copytree(cells, folder)
    rng = np.random.default_rng(5)
    canvas, _ = render_field(rng, 240, 320, 6, cluster_fraction=0.0, scale=1.0)
    Image.fromarray(add_sensor_noise(rng, canvas)).save(folder / "spindle" / "spindle_g0" / "whole_frame.png")
    assert main(["evaluate", str(tiny_model[0]), str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) hold several cells (whole_frame.png: " in out
