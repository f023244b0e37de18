"""Issue 19.4: `classify` says when an image holds several cells (a whole frame answered with one
row) and when crops look unlike the cells the model was trained on (size, and grey levels where
the card records them), as `run` does for a rig's cells."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA
from PIL import Image

from edge.capture.synthetic import add_sensor_noise, render_field
from edge.cli import main

FAST_MODEL = REPO / "models" / "mda231-pc3-fast.tflite"


def test_a_frame_of_several_cells_is_said_to_hold_them(tiny_model, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(3)
    canvas, _ = render_field(rng, 240, 320, 6, cluster_fraction=0.0, scale=1.0)
    frame = tmp_path / "frame.png"
    Image.fromarray(add_sensor_noise(rng, canvas)).save(frame)
    assert main(["classify", str(frame), "--model", str(tiny_model[0]), "--json"]) == 0
    out, err = capsys.readouterr()
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["cells_in_image"] >= 4, row
    assert f"{frame}: holds {row['cells_in_image']} cells" in err and "metascope detect" in err


def test_single_cell_crops_are_not_said_to_hold_several(tiny_model, tmp_path: Path, capsys) -> None:
    from test_unmasked_crops import write_cells

    write_cells(tmp_path, frames=2)
    for folder in ("masked", "unmasked"):
        assert main(["classify", str(tmp_path / folder), "--model", str(tiny_model[0]), "--json"]) == 0
        out, err = capsys.readouterr()
        rows = [json.loads(line) for line in out.splitlines()]
        assert len(rows) >= 15 and not [row for row in rows if "cells_in_image" in row], folder
        assert "holds" not in err, folder


def shared_crops(folder: str, pattern: str, every: int) -> list[Path]:
    crops = sorted((SHARED_DATA / folder).glob(pattern))[::every]
    if not crops:
        pytest.skip(f"shared data not found at {SHARED_DATA / folder} (set METASCOPE_SHARED_DATA)")
    return crops


def test_crops_of_another_imaging_method_are_said_to_look_unlike_the_training_cells(tmp_path: Path, capsys) -> None:
    """The meng-atom crops (brightfield, another lab) against the fast model, whose card records
    its training cells' areas: a warning, not 30 confident rows alone."""
    shared_crops("meng-atom", "*/*.jpg", 1)
    assert main(["classify", str(SHARED_DATA / "meng-atom"), "--model", str(FAST_MODEL)]) == 0
    err = capsys.readouterr().err
    assert "look unlike the cells the model was trained on" in err and "area" in err


def test_crops_like_the_training_cells_raise_no_warning(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "sample"
    folder.mkdir()
    for path in shared_crops("fayyaz-mda231-pc3", "*/*/*.png", 30):
        shutil.copy(path, folder / path.name)
    assert main(["classify", str(folder), "--model", str(FAST_MODEL)]) == 0
    err = capsys.readouterr().err
    assert "unlike" not in err and "holds" not in err


def test_grey_levels_far_from_the_cards_are_said(model_copy: Path, tmp_path: Path, capsys) -> None:
    """A card that records its training cells' grey levels (fit writes data.cell_grey): crops
    far brighter than those are named, even at the training size."""
    from test_unmasked_crops import write_cells

    card = json.loads(model_copy.with_suffix(".json").read_text())
    write_cells(tmp_path, frames=2)
    crops = sorted((tmp_path / "masked").glob("*.png"))
    grey = [np.asarray(Image.open(path)) for path in crops]
    means = [float(g[g > 0].mean()) for g in grey]
    spreads = [float(g[g > 0].std()) for g in grey]
    card.setdefault("data", {})["cell_grey"] = {
        "mean": {"n": len(means), "median": float(np.median(means)) - 60},
        "spread": {"n": len(spreads), "median": float(np.median(spreads))},
    }
    model_copy.with_suffix(".json").write_text(json.dumps(card))
    assert main(["classify", str(tmp_path / "masked"), "--model", str(model_copy)]) == 0
    err = capsys.readouterr().err
    assert "look unlike the cells the model was trained on" in err and "grey" in err
