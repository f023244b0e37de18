"""`metascope detect FRAME... --out DIR` (issue 13.4): every object the detector found, kept or
rejected and why, drawn and listed, with the config's [detect] settings, as `run` finds them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.capture.synthetic import render_frame
from edge.cells.detect import AT_BORDER, LARGE, TOO_SMALL, detect, inspect
from edge.cli import main


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A synthetic field of 20 cells plus a speck of debris and a cell cut by the frame's edge."""
    rng = np.random.default_rng(1)
    pixels = render_frame(rng, 480, 640, 20)[0].copy()
    pixels[200:206, 300:306] = rng.integers(0, 255, (6, 6))  # debris: far under min_area_px
    pixels[0:40, 0:42] = pixels[14:54, 368:410]  # a copy of a cell, touching the top-left corner
    return pixels


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_object_is_listed_kept_exactly_as_run_finds_them(frame, tmp_path: Path, capsys) -> None:
    Image.fromarray(frame).save(tmp_path / "field.png")
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "field.png"), "--out", str(out)]) == 0
    rows = read_rows(out / "objects.csv")
    kept = [row for row in rows if row["kept"] == "yes"]
    cells = detect(frame)
    assert [(int(r["bbox_y0"]), int(r["bbox_x0"]), int(r["area_px"])) for r in kept] == [
        (cell.bbox[0], cell.bbox[1], cell.area) for cell in cells
    ], "the kept objects are the service's detections"
    reasons = {row["rejected"] for row in rows if row["kept"] == "no"}
    assert reasons == {TOO_SMALL, AT_BORDER}
    assert all(0.0 < float(row["solidity"]) <= 1.0 for row in rows)
    assert "20 cells (0 clusters), 2 rejected" in capsys.readouterr().out
    with Image.open(out / "field.detect.png") as drawn:
        assert drawn.mode == "RGB" and drawn.size == (640, 480)
        colours = {tuple(c) for c in np.asarray(drawn).reshape(-1, 3)}
    assert {(60, 220, 90), (255, 60, 60)} <= colours, "cells green, rejected red"


def test_the_configs_detect_settings_are_the_ones_tried(frame, tmp_path: Path) -> None:
    Image.fromarray(frame).save(tmp_path / "field.png")
    config = tmp_path / "tuned.toml"
    config.write_text("[detect]\ncluster_area_px = 1500\nskip_border = false\n")
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "field.png"), "--out", str(out), "--config", str(config)]) == 0
    rows = read_rows(out / "objects.csv")
    assert {row["rejected"] for row in rows} == {"", TOO_SMALL}, "the edge cell is kept with skip_border off"
    for row in rows:
        large = int(row["area_px"]) > 1500
        assert (row["cluster"] == "yes") == large and (LARGE in row["cluster_reasons"]) == large


def test_inspect_never_changes_what_detect_keeps(frame) -> None:
    kept = [item.detection for item in inspect(frame) if not item.rejected]
    assert [(d.bbox, d.area, d.cluster, d.cores) for d in kept] == [
        (d.bbox, d.area, d.cluster, d.cores) for d in detect(frame)
    ]


def test_unreadable_frames_are_named_and_the_rest_still_written(frame, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(frame).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["detect", str(folder), "--out", str(out)]) == 1
    assert "broken.png" in capsys.readouterr().err
    assert (out / "good.detect.png").is_file()
    assert {row["frame"] for row in read_rows(out / "objects.csv")} == {str(folder / "good.png")}
