"""The fit bench (train/fit_bench.py): each fit's peak memory, time and cells, measured in its own
process, as `make bench` reports them for the shared data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.capture.synthetic_cells import write_synthetic_dataset
from train.fit_bench import main

TINY = ["--size", "32", "--window-px", "128", "--widths", "8,16", "--min-agreement", "0.5", "--quiet"]


def test_each_fit_reports_its_own_peak_memory_time_and_cells(tmp_path: Path, capsys) -> None:
    data = write_synthetic_dataset(tmp_path / "cells", per_group=12, groups=3, seed=4)
    out = tmp_path / "bench" / "fit.json"
    code = main(["--data", str(data), "--epochs", "1", "--backbones", "compact", "--out", str(out), "--",
                 "--positive", "spindle", *TINY])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["bench"] == "fit" and result["machine"]["cpus"] >= 1
    (run,) = result["fits"]
    assert run["backbone"] == "compact" and run["epochs"] == 1 and run["exit_code"] == 0
    assert run["cells"] == 2 * 3 * 12  # both labels, every group: what the card says it learnt from
    # The child's own high-water mark: a process that has loaded TensorFlow holds hundreds of MB.
    assert run["peak_rss_mb"] > 200
    # All of the fit's processes together, sampled: what the machine held at once.
    assert run["peak_rss_all_processes_mb"] > 200
    assert run["wall_s"] > 0 and run["cpu_s"] > 0
    assert "--epochs 1" in run["command"] and "TMP/bench-compact" in run["command"]
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith("bench fit: compact 1 epochs on 72 cells: peak ")
    assert "GB resident (largest process; " in summary and "GB all together)" in summary


def test_a_fit_that_fails_is_reported_with_its_message_and_a_non_zero_exit(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "cells", per_group=6, groups=2, seed=4)
    out = tmp_path / "fit.json"
    code = main(["--data", str(data), "--epochs", "1", "--backbones", "compact", "--out", str(out), "--",
                 "--positive", "no-such-label", *TINY])  # fmt: skip
    assert code == 1
    (run,) = json.loads(out.read_text())["fits"]
    assert run["exit_code"] != 0 and run["cells"] is None
    assert any("no-such-label" in line for line in run["log_tail"])


def test_a_fit_that_refuses_its_model_is_measured_and_reported_not_failed(tmp_path: Path, capsys) -> None:
    """A fit that refuses its model at the end (exit 6) still spent what the bench measures; its
    cells come from the card in NAME.refused.json, what a refused fit writes. Both labels hold the
    same cells here, so the held-out group scores AUC 0.5, below the bar asked for."""
    data = write_synthetic_dataset(tmp_path / "cells", per_group=12, groups=3, seed=4)
    shutil.rmtree(data / "spindle")
    shutil.copytree(data / "round", data / "spindle")
    code = main(["--data", str(data), "--epochs", "1", "--backbones", "compact", "--out", str(tmp_path / "f.json"),
                 "--", "--positive", "spindle", *TINY, "--min-group-auc", "0.9"])  # fmt: skip
    assert code == 0
    (run,) = json.loads((tmp_path / "f.json").read_text())["fits"]
    assert run["exit_code"] == 6 and run["cells"] == 72 and run["peak_rss_mb"] > 200
    assert "(exit 6: the fit finished and refused its model)" in capsys.readouterr().err


def test_options_before_the_separator_and_a_missing_folder_are_usage_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(tmp_path / "absent")])
    assert exc.value.code == 2 and "absent: not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(tmp_path), "--positive", "PC3"])
    assert exc.value.code == 2 and "before --: --positive PC3" in capsys.readouterr().err
