"""A model that inverts its calls on one culture must not ship: `fit --min-group-auc` (which
`make model` uses, at 0.6) refuses a model whose cross-validation scores any held-out group
below the floor, leaves the model already at --out untouched, and keeps the refused fit's
figures beside it for a person to read."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from conftest import REPO
from test_two_cultures import QUICK

from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.errors import ExitCode
from train.cli import main


def one_culture_mislabelled(tmp_path: Path) -> Path:
    """Culture g2 mislabelled both ways: a model that learns g0 and g1 calls it backwards."""
    data = write_synthetic_dataset(tmp_path / "cells", per_group=12, groups=3, seed=5)
    shutil.move(data / "round" / "round_g2", tmp_path / "round_g2")
    shutil.move(data / "spindle" / "spindle_g2", data / "round" / "round_g2")
    shutil.move(tmp_path / "round_g2", data / "spindle" / "spindle_g2")
    return data


def test_a_fit_that_inverts_one_culture_is_refused_and_the_shipped_model_stays(tmp_path: Path, capsys) -> None:
    data = one_culture_mislabelled(tmp_path)
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


def test_a_refused_teacher_keeps_its_views_for_the_student_fit_after_it(tmp_path: Path, capsys) -> None:
    """make model fits the fast model from the default one's views. When the default is refused,
    the shipped teacher's views may come from another recipe (other inputs: the student refuses
    them), so the refused fit keeps its own beside the shipped model, and a student learns from
    them with --teacher NAME.refused."""
    data = one_culture_mislabelled(tmp_path)
    teacher = tmp_path / "models" / "cells"
    fit = ["fit", str(data), "--positive", "spindle", "--cv", *QUICK]
    refused = main([*fit, "--out", str(teacher), "--distill-views", "2", "--min-group-auc", "0.6"])
    assert refused == ExitCode.EXPORT_REFUSED
    views = teacher.with_name("cells.refused.distill.npz")
    assert views.is_file() and not teacher.with_name("cells.distill.npz").exists()
    assert "cells.refused.distill.npz" in capsys.readouterr().err

    student = tmp_path / "models" / "cells-fast"
    assert main([*fit, "--out", str(student), "--teacher", str(teacher.with_name("cells.refused"))]) == 0
    taught = json.loads(student.with_suffix(".json").read_text())["training"]["teacher"]
    assert taught["views"] == views.name and taught["sha256"] is None, "the card says it learnt from a refused model"


def test_make_model_still_fits_the_fast_model_when_the_default_is_refused(tmp_path: Path) -> None:
    """make model's own shell: the default fit refused (exit 6), the fast fit still runs (the
    default's recipe at 64 px, learning from no other model), and make ends in failure naming
    what was refused. The fits are a stand-in interpreter that records its arguments: the fits
    themselves are tested above."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *--distill-views*) exit 6;; esac\n')
    python.chmod(0o755)
    (venv / ".installed-stamp").touch()
    made = subprocess.run(["make", "-s", "-C", str(REPO), "model", f"VENV={venv}", f"PY={python}",
                           "-o", f"{venv}/.installed-stamp"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode != 0 and "refused: models/mda231-pc3" in made.stderr, made.stderr
    default, fast = calls.read_text().splitlines()
    assert "--out models/mda231-pc3 " in default
    assert "--out models/mda231-pc3-fast" in fast and "--size 64" in fast and "--teacher" not in fast
