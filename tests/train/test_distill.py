"""Distillation: a student learns from its teacher's answers on fixed views, fold by fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.capture.synthetic_cells import write_synthetic_dataset
from edge.classify.preprocess import InputSpec
from edge.errors import ExitCode
from train.augment import AugmentSettings
from train.cli import main
from train.dataset import DatasetError, load_folder
from train.distill import FINAL, Teacher, TeacherOutputs, cell_digests, distill_path_for, fixed_views

EXIT_USAGE = ExitCode.USAGE

# A compact teacher and student on 32 px synthetic cells: seconds per fit.
SMALL = ["--backbone", "compact", "--size", "32", "--window-px", "128", "--widths", "8,16", "--pooling", "avg",
         "--batch-size", "16", "--learning-rate", "0.005", "--min-agreement", "0.9", "--no-leak-check",
         "--quiet"]  # fmt: skip
GROUPS = ["--group-by", r"_(g\d+)/", "--cv"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("cells"), per_group=16, groups=3, seed=7)


@pytest.fixture(scope="module")
def teacher(cells: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    code = main(["fit", str(cells), "--out", str(out), *GROUPS, "--epochs", "15", "--distill-views", "3", *SMALL])
    assert code == 0
    return out


def test_views_are_the_same_every_time_they_are_drawn(cells: Path) -> None:
    spec = InputSpec(size=32, window_px=128)
    dataset = load_folder(cells, spec)
    first = fixed_views(dataset.subset(np.arange(4)), 3, 11, AugmentSettings())
    assert first.shape == (4, 3, 32, 32)
    assert np.array_equal(first, fixed_views(dataset.subset(np.arange(4)), 3, 11, AugmentSettings()))
    assert not np.array_equal(first, fixed_views(dataset.subset(np.arange(4)), 3, 12, AugmentSettings()))
    assert not np.array_equal(first[:, 0], first[:, 1]), "each view is its own draw"


def test_the_teacher_records_every_fold_model_and_the_final_one(teacher: Path, cells: Path) -> None:
    outputs = TeacherOutputs.load(distill_path_for(teacher.with_suffix(".tflite")))
    card = json.loads(teacher.with_suffix(".json").read_text())
    folds = [fold["held_out"] for fold in card["evaluation"]["cross_validation"]["folds"]]
    assert outputs.models == [*folds, FINAL] and outputs.views == 3 and outputs.window_px == 128
    dataset = load_folder(cells, InputSpec(size=32, window_px=128), r"_(g\d+)/")
    assert outputs.paths == dataset.relative_paths()
    for name in folds:
        scored = ~np.isnan(outputs.probabilities[outputs.models.index(name)].astype(np.float32)).any(axis=1)
        # A fold's teacher scores its training cells only: never the group it is tested on.
        assert not scored[dataset.groups == name].any() and scored[dataset.groups != name].all()
    assert not np.isnan(outputs.probabilities[-1].astype(np.float32)).any()


def test_each_fold_learns_from_its_own_teacher() -> None:
    spec = InputSpec(size=16, window_px=32)
    windows = np.zeros((4, 32, 32), np.uint8)
    windows[:, 8:24, 8:24] = 100
    from train.dataset import Dataset

    paths = [Path(f"/d/x/{i}.png") for i in range(4)]
    dataset = Dataset(np.zeros((4, 16, 16), np.uint8), np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]),
                      paths, ("x", "y"), spec, Path("/d"), windows=windows)  # fmt: skip
    probabilities = np.full((3, 4, 2), np.nan, np.float16)
    probabilities[0, 2:] = 0.25  # fold "a" (held out: a) scored b's cells
    probabilities[1, :2] = 0.5  # fold "b" scored a's cells
    probabilities[2] = 0.75  # final: everything
    outputs = TeacherOutputs("t", dataset.relative_paths(), cell_digests(windows), 32, 0, AugmentSettings(),
                             ["a", "b", FINAL], probabilities)  # fmt: skip
    teacher = Teacher(outputs, dataset)
    assert np.all(teacher.targets("a", np.array([2, 3])).probabilities == 0.25)
    assert np.all(teacher.targets(FINAL, np.arange(4)).probabilities == 0.75)
    assert teacher.targets("b", np.array([0, 1])).views.shape == (2, 2, 16, 16)
    with pytest.raises(DatasetError, match="did not score"):
        teacher.targets("a", np.array([0]))  # fold a's teacher never saw group a
    with pytest.raises(DatasetError, match="no model for 'c'"):
        teacher.targets("c", np.array([0]))


def student_auc(cells: Path, teacher: Path, out: Path, *extra: str) -> float:
    code = main(["fit", str(cells), "--out", str(out), *GROUPS, "--epochs", "15", "--teacher", str(teacher), *SMALL,
                 *extra])  # fmt: skip
    assert code == 0
    return json.loads(out.with_suffix(".json").read_text())["evaluation"]["cross_validation"]["summary"]["roc_auc"]


def test_the_student_learns_what_its_teacher_says(cells: Path, teacher: Path, tmp_path: Path) -> None:
    good = student_auc(cells, teacher, tmp_path / "student")
    card = json.loads((tmp_path / "student.json").read_text())
    assert card["training"]["teacher"]["model"] == "teacher"
    assert card["training"]["teacher"]["sha256"] == json.loads(teacher.with_suffix(".json").read_text())["sha256"]
    assert good["mean"] > 0.8
    # A teacher that is sure of the wrong answer for every cell, the labels given little weight:
    # a student that learns from its teacher now calls the cells the wrong way round.
    liar = tmp_path / "liar"
    outputs = TeacherOutputs.load(distill_path_for(teacher))
    wrong = np.array([0.0 if path.startswith("spindle/") else 1.0 for path in outputs.paths])  # spindle: positive
    outputs.probabilities = np.broadcast_to(wrong[None, :, None], outputs.probabilities.shape).astype(np.float16)
    outputs.save(distill_path_for(liar))
    fooled = student_auc(cells, liar, tmp_path / "fooled", "--teacher-weight", "0.95")
    assert fooled["mean"] < 0.3


def test_a_teacher_from_other_cells_or_windows_is_refused(cells: Path, teacher: Path, tmp_path: Path, capsys) -> None:
    def fit(data: Path, *extra: str) -> int:
        out = tmp_path / "student"
        return main(["fit", str(data), "--out", str(out), "--epochs", "1", "--teacher", str(teacher), *SMALL, *extra])

    # The same file names with other pixels, then one file more.
    other = write_synthetic_dataset(tmp_path / "other", per_group=16, groups=3, seed=8)
    assert fit(other, *GROUPS) == EXIT_USAGE
    assert "have other pixels" in capsys.readouterr().err
    (other / "round" / "round_g0" / "extra.png").write_bytes(
        next((cells / "round" / "round_g0").glob("*.png")).read_bytes()
    )
    assert fit(other, *GROUPS) == EXIT_USAGE
    assert "only the student's: ['round/round_g0/extra.png']" in capsys.readouterr().err
    assert fit(cells, *GROUPS, "--window-px", "96") == EXIT_USAGE
    assert "--window-px 128" in capsys.readouterr().err
    assert fit(cells) == EXIT_USAGE
    assert "need --cv" in capsys.readouterr().err
    missing = ["fit", str(cells), "--out", str(tmp_path / "s"), *GROUPS, "--teacher", str(tmp_path / "none"), *SMALL]
    assert main(missing) == EXIT_USAGE
    assert "no teacher outputs" in capsys.readouterr().err
