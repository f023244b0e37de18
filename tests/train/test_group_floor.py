"""A model that inverts its calls on one culture must not ship: `fit --min-group-auc` (which
`make model` uses, at 0.6) refuses a model whose cross-validation scores any held-out group
below the floor, leaves the model already at --out untouched, and keeps the refused fit's
figures beside it for a person to read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_two_cultures import QUICK

from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.errors import ExitCode
from train.cli import main


def test_a_fit_that_inverts_one_culture_is_refused_and_the_shipped_model_stays(tmp_path: Path, capsys) -> None:
    data = write_synthetic_dataset(tmp_path / "cells", per_group=12, groups=3, seed=5)
    # Culture g2 mislabelled both ways: a model that learns g0 and g1 calls it backwards.
    shutil.move(data / "round" / "round_g2", tmp_path / "round_g2")
    shutil.move(data / "spindle" / "spindle_g2", data / "round" / "round_g2")
    shutil.move(tmp_path / "round_g2", data / "spindle" / "spindle_g2")
    shipped = tmp_path / "models" / "cells.tflite"
    shipped.parent.mkdir()
    shipped.write_bytes(b"the model a rig runs today")
    shipped.with_suffix(".json").write_text('{"the card": "of today"}')

    fit = ["fit", str(data), "--out", str(shipped), "--positive", "spindle", "--cv", *QUICK, "--min-group-auc", "0.6"]
    assert main(fit) == ExitCode.EXPORT_REFUSED
    err = capsys.readouterr().err
    assert "g2" in err and "0.6" in err and "refused" in err, err

    assert shipped.read_bytes() == b"the model a rig runs today", "the shipped model stays"
    assert shipped.with_suffix(".json").read_text() == '{"the card": "of today"}'
    refused = json.loads((shipped.parent / "cells.refused.json").read_text())
    assert refused["min_group_auc"] == 0.6 and "held-out" in refused["refused"]
    per_group = refused["per_group"]
    assert per_group["g2"]["roc_auc"] < 0.6 and per_group["g2"]["roc_auc"] == min(
        group["roc_auc"] for group in per_group.values()
    )
