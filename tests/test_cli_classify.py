"""`metascope classify`: rows per image, bad files named on stderr, exit status 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from edge.capture.synthetic_cells import KINDS, synthetic_batch
from edge.cli import main


@pytest.fixture
def cells_dir(tmp_path: Path) -> Path:
    """Six good synthetic cells, three per kind, two levels deep; truth in the file name."""
    crops, labels = synthetic_batch(6, seed=77)
    for index, (crop, label) in enumerate(zip(crops, labels, strict=True)):
        folder = tmp_path / "cells" / ("a" if index < 3 else "b/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(folder / f"{index}_{KINDS[label]}.png")
    return tmp_path / "cells"


def add_bad_files(folder: Path) -> list[Path]:
    text = folder / "notes.txt"
    text.write_text("exposure 10 ms\n")
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    truncated = folder / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    return [text, empty, truncated]


def test_good_and_bad_files(cells_dir: Path, tiny_model, capsys) -> None:
    bad = add_bad_files(cells_dir)
    status = main(["classify", str(cells_dir), "--model", str(tiny_model[0])])
    out, err = capsys.readouterr()
    rows = [line.split("\t") for line in out.splitlines()[1:]]
    assert status == 1
    assert len(rows) == 6
    for file, label, probability in rows:
        assert Path(file).stem.endswith(label), f"{file} classified as {label} ({probability})"
    for path in bad:
        assert sum(str(path) in line for line in err.splitlines()) == 1, f"{path} not named once on stderr"
    # notes.txt is no image: left out and named, not a failure; the broken images are failures.
    assert "6 classified (round 3, spindle 3; threshold 0.5), 2 failed" in err
    assert f"1 non-image file(s) left out ({bad[0]})" in err


def test_all_good_exits_zero_with_json_lines(cells_dir: Path, tiny_model, capsys) -> None:
    status = main(["classify", str(cells_dir), "--model", str(tiny_model[0]), "--json"])
    out, _ = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert len(records) == 6
    assert all(set(r) == {"file", "label", "probability", "model"} for r in records)


def test_directories_are_read_recursively_in_sorted_order(cells_dir: Path, tiny_model, capsys) -> None:
    (cells_dir / ".hidden.png").write_bytes(b"")  # hidden files are not inputs
    main(["classify", str(cells_dir), "--model", str(tiny_model[0])])
    files = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert files == sorted(str(p) for p in cells_dir.rglob("*.png") if not p.name.startswith("."))


def test_threshold_overrides_the_card(cells_dir: Path, tiny_model, capsys) -> None:
    main(["classify", str(cells_dir), "--model", str(tiny_model[0]), "--json", "--threshold", "0.999"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all((r["label"] == "spindle") == (r["probability"] >= 0.999) for r in records)


def test_missing_input_file_is_named_and_the_rest_continue(cells_dir: Path, tiny_model, capsys) -> None:
    missing = cells_dir / "gone.png"
    status = main(["classify", str(missing), str(cells_dir), "--model", str(tiny_model[0])])
    out, err = capsys.readouterr()
    assert status == 1
    assert str(missing) in err
    assert len(out.splitlines()) == 7  # header + six cells


@pytest.mark.parametrize(
    "argv",
    [
        ["classify"],
        ["classify", "x.png", "--threshold", "2"],
        ["classify", "x.png", "--threshold", "abc"],
        ["nonsense"],
    ],
    ids=["no-inputs", "threshold-range", "threshold-text", "unknown-command"],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


def test_unusable_model_exits_2_naming_it(cells_dir: Path, tmp_path: Path, capsys) -> None:
    status = main(["classify", str(cells_dir), "--model", str(tmp_path / "absent.tflite")])
    assert status == 2
    assert "absent.tflite: model file not found" in capsys.readouterr().err


def test_console_script_and_module_entry_point(cells_dir: Path, tiny_model) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "classify", str(cells_dir), "--model", str(tiny_model[0])],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 7


def test_awkward_names_and_non_files_are_named_and_every_row_stays_one_row(cells_dir: Path, tiny_model) -> None:
    """Undecodable bytes, tabs and newlines in names must not break the TSV or the rest of the
    output; links to nowhere, link loops and FIFOs are named failures, not silent skips."""
    good = next(cells_dir.rglob("*.png")).read_bytes()
    odd = [b"tab\there.png", b"new\nline.png", b"latin1-\xe9.png", b"back\\slash.png"]
    for name in odd:
        with open(os.path.join(os.fsencode(cells_dir), name), "wb") as handle:
            handle.write(good)
    (cells_dir / "nowhere.png").symlink_to(cells_dir / "missing.png")
    (cells_dir / "loop.png").symlink_to(cells_dir / "loop.png")
    os.mkfifo(cells_dir / "fifo.png")
    # A real process with a plain C locale stdout, as cron or ssh may give it.
    env = {**os.environ, "LC_ALL": "C", "PYTHONIOENCODING": ""}
    result = subprocess.run(
        [sys.executable, "-m", "edge", "classify", str(cells_dir), "--model", str(tiny_model[0])],
        capture_output=True, cwd=REPO, timeout=60, env=env,
    )  # fmt: skip
    out = result.stdout.decode("utf-8")
    err = result.stderr.decode("utf-8", errors="replace")
    rows = out.splitlines()[1:]
    assert result.returncode == 1, err
    assert len(rows) == 6 + len(odd) and all(len(row.split("\t")) == 3 for row in rows), rows
    names = {row.split("\t")[0].rsplit("/", 1)[-1] for row in rows}
    assert {"tab\\there.png", "new\\nline.png", "latin1-\\xe9.png", "back\\\\slash.png"} <= names
    for failed in ("nowhere.png", "loop.png", "fifo.png"):
        assert failed in err, f"{failed} not named on stderr"
    assert f"{6 + len(odd)} classified" in err and "3 failed" in err


def test_a_model_answer_that_is_not_a_probability_fails_that_file_only(
    cells_dir: Path, tiny_model, capsys, monkeypatch
) -> None:
    from edge.classify.classifier import Classifier

    real = Classifier._positive_probability

    def broken(self, outputs):
        probabilities = real(self, outputs).copy()
        probabilities[0] = np.nan
        return probabilities

    monkeypatch.setattr(Classifier, "_positive_probability", broken)
    status = main(["classify", str(cells_dir), "--model", str(tiny_model[0]), "--json"])
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]  # bare NaN is not JSON
    assert status == 1
    assert len(records) == 5 and all(0.0 <= r["probability"] <= 1.0 for r in records)
    assert "not a probability" in err


def test_json_rows_name_the_model_and_an_empty_folder_is_named(cells_dir: Path, tiny_model, tmp_path, capsys) -> None:
    """Rows kept from several models must say which model gave them; a folder with no files
    at all is a mistake to report (a wrong path, an unmounted share), not a silent success."""
    assert main(["classify", str(cells_dir), "--model", str(tiny_model[0]), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {record["model"] for record in records} == {"tiny"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["classify", str(empty), str(cells_dir), "--model", str(tiny_model[0])]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 + 6 and f"{empty}: no files in this folder" in err
