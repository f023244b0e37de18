"""Issue 13.2 and 13.4: the training cells' areas in the model card against the rig's cells.
Where a pixel size is missing, `run` (at start and in its summary) and `doctor` warn when the
rig's cells are far from the training cells' size; detect.cluster_area_px 0 (the default) is a
multiple of the training cells' median area. Cards without the record work as before."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from edge.cells.detect_settings import FIXED_CLUSTER_AREA_PX
from edge.cells.scale import CLUSTER_AREA_MULTIPLE, area_summary
from edge.cli import main


def model_with_areas(model_copy: Path, median: float | None, pixel_size_um: float | None = None) -> Path:
    """The tiny model with its card recording training cells of this median area (None: no record)."""
    card_path = model_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    if median is not None:
        card["data"] = {"cell_area_px": {"n": 400, "q10": median / 2, "median": median, "q90": median * 2}}
    card["input"]["pixel_size_um"] = pixel_size_um
    card_path.write_text(json.dumps(card))
    return model_copy


def run_synthetic(model: Path, state: Path, capsys, *extra: str) -> str:
    args = ["run", "--source", "synthetic", "--max-frames", "3", "--state-dir", str(state), "--model", str(model)]
    assert main([*args, *extra]) == 0
    return capsys.readouterr().err


def track_areas(state: Path, capsys) -> list[dict]:
    assert main(["export", "--state-dir", str(state), "--table", "cells", "--format", "jsonl"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def doctor_line(model: Path, state: Path, capsys) -> str:
    main(["doctor", "--state-dir", str(state), "--model", str(model)])
    return next(line for line in capsys.readouterr().out.splitlines() if " scale: " in line)


def test_far_apart_cell_sizes_are_warned_at_start_in_the_summary_and_by_doctor(model_copy, tmp_path, capsys) -> None:
    model = model_with_areas(model_copy, median=60.0)  # cells 20x smaller than the synthetic ones
    err = run_synthetic(model, tmp_path / "state", capsys)
    assert "scale: no pixel size in the model card or pipeline.pixel_size_um: the window is not rescaled" in err
    warnings = [line for line in err.splitlines() if "WARNING scale: cells here have a median area of" in line]
    assert len(warnings) == 1, "warned once as soon as enough cells are seen"
    summary = next(line for line in err.splitlines() if "stopped: " in line)
    assert "scale: cells here have a median area of" in summary and "x the model's training cells (60 px)" in summary
    assert doctor_line(model, tmp_path / "state", capsys).startswith("WARN  scale: ")


def test_matching_sizes_or_known_pixel_sizes_give_no_warning(model_copy, tmp_path, capsys) -> None:
    run_synthetic(model_with_areas(model_copy, median=None), tmp_path / "state", capsys)
    rig_median = statistics.median(row["area_px"] for row in track_areas(tmp_path / "state", capsys))
    model = model_with_areas(model_copy, median=rig_median * 1.3)
    err = run_synthetic(model, tmp_path / "state", capsys)
    assert "cells here have a median area" not in err
    assert doctor_line(model, tmp_path / "state", capsys).startswith("PASS  scale: ")

    # Both pixel sizes known: the window is rescaled, so there is nothing to compare.
    model = model_with_areas(model_copy, median=60.0, pixel_size_um=0.65)
    config = tmp_path / "rig.toml"
    config.write_text("[pipeline]\npixel_size_um = 0.65\n")
    err = run_synthetic(model, tmp_path / "state", capsys, "--config", str(config))
    assert "the window is rescaled from the model's pixel size" in err and "cells here have" not in err


def test_a_card_without_training_areas_skips_the_comparison(tiny_model, tmp_path, capsys) -> None:
    err = run_synthetic(tiny_model[0], tmp_path / "state", capsys)
    assert "the model card records no training cell areas to compare with" in err
    assert (
        "clusters: learnt rule flagging 5 % of its training single cells, a single cell's area from the rule's "
        "training crops (the model card records no training cell areas)" in err
    )
    config = tmp_path / "shape.toml"
    config.write_text('[detect]\ncluster_rule = "shape"\n')
    err = run_synthetic(tiny_model[0], tmp_path / "shape", capsys, "--config", str(config))
    assert f"clusters: shape rule: objects over {FIXED_CLUSTER_AREA_PX} px (fixed default" in err
    assert doctor_line(tiny_model[0], tmp_path / "state", capsys).startswith("SKIP  scale: ")


def test_the_cluster_size_follows_the_training_cells_unless_the_config_sets_it(model_copy, tmp_path, capsys) -> None:
    model = model_with_areas(model_copy, median=100.0)  # every synthetic cell is over 4 x 100 px
    err = run_synthetic(model, tmp_path / "learnt", capsys)
    assert "a single cell's area 100 px from the model card's training cells" in err  # test_cluster_rule.py: its effect

    shape = tmp_path / "shape.toml"
    shape.write_text('[detect]\ncluster_rule = "shape"\n')
    err = run_synthetic(model, tmp_path / "small", capsys, "--config", str(shape))
    limit = round(CLUSTER_AREA_MULTIPLE * 100)
    assert f"objects over {limit} px ({CLUSTER_AREA_MULTIPLE:g} x the training cells' median area" in err
    tracks = track_areas(tmp_path / "small", capsys)
    assert tracks and all(row["cluster"] for row in tracks)

    config = tmp_path / "rig.toml"
    config.write_text('[detect]\ncluster_rule = "shape"\ncluster_area_px = 100000\n')
    err = run_synthetic(model, tmp_path / "set", capsys, "--config", str(config))
    assert "clusters: shape rule: objects over 100000 px (detect.cluster_area_px)" in err
    assert not all(row["cluster"] for row in track_areas(tmp_path / "set", capsys))


def test_area_summary_quantiles() -> None:
    summary = area_summary(range(1, 102))
    assert summary == {"n": 101, "q10": 11.0, "q25": 26.0, "median": 51.0, "q75": 76.0, "q90": 91.0}
    assert area_summary([]) == {"n": 0}


def test_whole_window_mode_compares_no_areas(model_copy, tmp_path, capsys) -> None:
    """mode "whole" classifies a fixed window per frame: its area is the window's, not a cell's."""
    config = tmp_path / "flow.toml"
    config.write_text('[pipeline]\nmode = "whole"\n')
    model = model_with_areas(model_copy, median=60.0)
    err = run_synthetic(model, tmp_path / "state", capsys, "--config", str(config), "--max-frames", "12")
    assert "pipeline.mode whole has no cell areas to compare" in err and "cells here have" not in err
