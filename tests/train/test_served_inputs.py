"""Training on served inputs: each crop as the Pi's detector masks it on its own background."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.capture.composed import Crop, on_background
from edge.capture.images import read_grayscale
from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.cells.scale import area_summary
from edge.classify.preprocess import InputSpec, UnsegmentableCrop, crop_cell, finish_input
from edge.classify.survey import grey_summary
from edge.errors import ExitCode
from train import served as served_module
from train.cli import main
from train.dataset import load_folder
from train.served import served_inputs

SPEC = InputSpec(size=32, window_px=128)
GROUPS = r"_(g\d+)/"
# A compact fit at 32 px for two epochs: it only has to run end to end.
SMALL = ["--backbone", "compact", "--size", "32", "--window-px", "128", "--widths", "8,16", "--pooling", "avg",
         "--batch-size", "16", "--epochs", "2", "--min-agreement", "0.5", "--no-leak-check", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells"), per_group=8, groups=3, seed=5)


def test_served_windows_are_the_pis_mask_of_the_crop_on_its_background(cells: Path) -> None:
    dataset = load_folder(cells, SPEC, GROUPS)
    served = served_inputs(dataset, 2)
    assert served.served["renderings"] == 2 * len(dataset) and served.served["cells_left_out"] == 0
    for index in (0, len(dataset) - 1):
        gray = read_grayscale(dataset.paths[index])
        rng = np.random.default_rng(int(dataset.digests[index], 16))
        crop = Crop.from_image(gray, "", "")
        expected = [crop_cell(on_background(crop, rng), SPEC).window for _ in range(2)]
        assert np.array_equal(served.renderings[index, 0], expected[0])
        assert np.array_equal(served.renderings[index, 1], expected[1])
        assert np.array_equal(served.images[index], finish_input(expected[0], SPEC)), "evaluated as served"
        # Not the data set's mask: the Pi's mask keeps background the data set cut away, or cuts cell it kept.
        assert not np.array_equal(expected[0] > 0, dataset.windows[index] > 0)
        assert not np.array_equal(expected[0], expected[1]), "each rendering has its own noise and jitter"


def test_renderings_are_the_same_in_every_fit_and_subset(cells: Path) -> None:
    dataset = load_folder(cells, SPEC, GROUPS)
    every = served_inputs(dataset, 2)
    some = served_inputs(dataset.subset(np.arange(3, 9)), 2)
    assert np.array_equal(every.renderings[3:9], some.renderings)


def flat_crop(path: Path) -> None:
    """A masked crop with no texture: on its own background the detector finds nothing."""
    image = np.zeros((120, 120), np.uint8)
    image[40:80, 35:85] = 110
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_a_cell_the_detector_never_finds_is_left_out_and_counted(cells: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(cells, mixed)
    flat_crop(mixed / "round" / "round_g9" / "flat.png")
    dataset = load_folder(mixed, SPEC, GROUPS)
    served = served_inputs(dataset, 2)
    assert len(served) == len(dataset) - 1
    assert served.served["unsegmentable_renderings"] == 2 and served.served["cells_left_out"] == 1
    assert all(path.name != "flat.png" for path in served.paths)
    assert any("flat.png" in reason and "no cell" in reason for _, reason in served.skipped)


def test_the_report_says_which_files_were_unreadable_and_which_had_no_cell(cells: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(cells, mixed)
    flat_crop(mixed / "round" / "round_g9" / "flat.png")
    (mixed / "round" / "round_g9" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "m"
    assert main(["fit", str(mixed), "--out", str(out), "--group-by", GROUPS, *SMALL]) == 0
    report = out.with_suffix(".report.md").read_text()
    # A crop the detector finds no cell in is readable: calling it unreadable sends a person
    # looking for a broken file that is not there.
    assert "- Files skipped: 2: 1 unreadable, 1 crop(s) the Pi's detector finds no cell in" in report
    assert "Unreadable files skipped" not in report


def test_an_unsegmentable_rendering_is_dropped_not_drawn_as_a_blank(cells: Path, monkeypatch) -> None:
    calls = {"n": 0}

    def every_second_fails(gray: np.ndarray, spec: InputSpec):
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise UnsegmentableCrop("no cell")
        return crop_cell(gray, spec)

    monkeypatch.setattr(served_module, "crop_cell", every_second_fails)
    dataset = load_folder(cells, SPEC, GROUPS)
    served = served_inputs(dataset, 2)
    assert served.served["unsegmentable_renderings"] == len(dataset) and len(served) == len(dataset)
    assert set(served.rendering_counts.tolist()) == {1}
    rng = np.random.default_rng(0)
    members = np.arange(len(served))
    for _ in range(20):  # drawn many times, never the empty second slot
        assert np.array_equal(served.drawn_windows(members, rng), served.renderings[:, 0])


def test_a_fit_on_served_inputs_runs_and_its_card_and_evaluate_say_so(cells: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "served"
    assert main(["fit", str(cells), "--out", str(out), "--group-by", GROUPS, "--inputs", "served", *SMALL]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["inputs"] == "served"
    made = card["data"]["served_inputs"]
    assert made["renderings_per_cell"] == 2 and made["renderings"] == 2 * 48 and made["cells_left_out"] == 0
    # The card's cell statistics stay the data set's: the Pi's cluster rule and scale check measure
    # against them, and the setting changes what the model learns from, not the rig's behaviour.
    dataset = load_folder(cells, SPEC, GROUPS)
    assert card["data"]["cell_area_px"]["median"] == area_summary(dataset.areas.tolist())["median"]
    assert card["data"]["cell_grey"]["spread"] == grey_summary(list(dataset.windows))["spread"]
    capsys.readouterr()
    assert main(["evaluate", str(out.with_suffix(".tflite")), str(cells), "--group-by", GROUPS, "--quiet"]) == 0
    assert "learnt from the Pi's masks" in capsys.readouterr().out


def test_the_default_fit_trains_as_the_pi_serves(cells: Path, tmp_path: Path) -> None:
    """Served inputs are the default recipe: per tracked cell over seven held-out conditions they
    scored 0.786 against 0.718 on the data set's masks (docs/accuracy-levers.md)."""
    out = tmp_path / "default"
    assert main(["fit", str(cells), "--out", str(out), "--group-by", GROUPS, *SMALL]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["inputs"] == "served" and card["data"]["served_inputs"]["renderings"] > 0
    # The report a person reads says it in words, with the rule and the cells it left out.
    report = out.with_suffix(".report.md").read_text()
    assert f"- Inputs: each cell as the Pi serves it: {card['data']['served_inputs']['rule']}" in report


def test_a_fit_on_the_data_sets_masks_says_nothing_of_the_pis(cells: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dataset"
    argv = ["fit", str(cells), "--out", str(out), "--group-by", GROUPS, "--inputs", "dataset", *SMALL]
    assert main(argv) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["inputs"] == "dataset" and card["data"]["served_inputs"] is None
    capsys.readouterr()
    assert main(["evaluate", str(out.with_suffix(".tflite")), str(cells), "--group-by", GROUPS, "--quiet"]) == 0
    assert "learnt from the Pi's masks" not in capsys.readouterr().out
    assert "- Inputs: each cell as the data set masked it" in out.with_suffix(".report.md").read_text()


def test_a_refused_export_keeps_the_setting_on_the_float_models_card(cells: Path, tmp_path: Path, monkeypatch) -> None:
    """A served fit whose int8 export is refused is evaluated as its float model: that card must
    say how it was trained too."""
    import train.validation

    real = train.validation.int8_probabilities
    monkeypatch.setattr(train.validation, "int8_probabilities", lambda content, images: 1.0 - real(content, images))
    out = tmp_path / "refused"
    args = ["fit", str(cells), "--out", str(out), "--group-by", GROUPS, "--inputs", "served", *SMALL]
    assert main(args) == ExitCode.EXPORT_REFUSED
    card = json.loads((tmp_path / "refused.refused.float.json").read_text())
    assert card["training"]["settings"]["inputs"] == "served"
    assert card["data"]["served_inputs"]["renderings"] == 2 * 48
