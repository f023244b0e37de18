"""Closing the loop (issue 19.6): the report's gallery names each crop's file, runs of different
models get their own histogram and gallery, and `metascope-train sort-crops` copies a pulled
folder's crops into label folders by the rig's call, for a person to correct before the next fit."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import re
import shutil
from pathlib import Path

from rig_results import pull, pulled_fixture, run_rig  # noqa: F401 (the fixture `pulled`)

from edge.classify.classifier import Classifier
from train.cli import main as metascope_train
from train.dataset import load_folder


def database_of(results: Path, host: str) -> Path:
    return next(folder for folder in (results / host).iterdir() if folder.is_dir())


def cells_with_crops(results: Path) -> list[tuple[str, Path, dict[str, str]]]:
    """(host, database folder, cells.csv row) of every cell whose crop was pulled."""
    found = []
    for host in sorted(path.name for path in results.iterdir() if path.is_dir()):
        database = database_of(results, host)
        with (database / "cells.csv").open(newline="") as handle:
            found += [(host, database, row) for row in csv.DictReader(handle) if row["crop"]]
    return found


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with its sha256 (links as their target)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = str(path.readlink())
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_the_gallery_names_each_crop_file_and_keeps_models_apart(pulled: Path, tmp_path: Path, tiny_model) -> None:
    results = tmp_path / "results"
    shutil.copytree(pulled, results)
    mylab = tmp_path / "models" / "mylab.tflite"  # the tiny model under another card name: another model
    mylab.parent.mkdir()
    shutil.copy(tiny_model[0], mylab)
    card = json.loads(Path(tiny_model[0]).with_suffix(".json").read_text())
    mylab.with_suffix(".json").write_text(json.dumps({**card, "name": "mylab"}))
    pull(run_rig(tmp_path / "scope3", mylab, seed=5), results, "scope3")
    assert metascope_train(["report", str(results)]) == 0
    page = (results / "report.html").read_text()

    tiles = page.split('<div class="tile')[1:]
    crops = cells_with_crops(results)
    assert len(tiles) == len(crops)
    for host, database, row in crops:
        (tile,) = [tile for tile in tiles if f'alt="{row["crop"]}"' in tile]
        visible = html.unescape(re.sub(r"<[^>]+>", " ", tile.split(">", 1)[1]))
        assert row["crop"] in visible, "the file name is shown, not only in alt text"
        assert f"{host}/{database.name}/crops/{row['crop']}" in html.unescape(tile), "its path in the folder"
    sha256 = card["sha256"][:8]
    histograms = re.findall(r"<figcaption>Probability histogram: model ([^<]*)</figcaption>", page)
    assert histograms == [f"mylab ({sha256})", f"tiny ({sha256})"]
    galleries = [html.unescape(part) for part in page.split("<h2>Cells of model ")[1:]]
    assert [gallery.split(",")[0] for gallery in galleries] == [f"mylab ({sha256})", f"tiny ({sha256})"]
    for gallery, hosts in zip(galleries, ({"scope3"}, {"scope1", "scope2"}), strict=True):
        shown = {row["crop"] for host, _, row in crops if host in hosts}
        assert set(re.findall(r'alt="([^"]+)"', gallery.split("<h2>")[0])) == shown


def test_sort_crops_copies_by_the_rigs_call_and_never_undoes_a_correction(
    pulled: Path, tmp_path: Path, tiny_model, capsys
) -> None:
    results = tmp_path / "results"
    shutil.copytree(pulled, results)
    outside = tmp_path / "outside.png"
    shutil.copy(next((database_of(results, "scope1") / "crops").iterdir()), outside)
    crops = cells_with_crops(results)
    planted = database_of(results, "scope2") / "crops" / crops[-1][2]["crop"]
    planted.unlink()
    planted.symlink_to(outside)
    before = tree(results)
    dest = tmp_path / "data"

    assert metascope_train(["sort-crops", str(results), str(dest)]) == 1, "one crop could not be read"
    out, err = capsys.readouterr()
    assert f"could not read scope2/{database_of(results, 'scope2').name}/crops/{planted.name}" in err
    assert tree(results) == before, "the pulled folder is never changed"
    copied = crops[:-1]
    for host, database, row in copied:
        group = f"{host}_{database.name[:8]}_run{row['run_id']}"
        target = dest / row["label"] / group / row["crop"]
        assert target.read_bytes() == (database / "crops" / row["crop"]).read_bytes()
    assert not list(dest.rglob(planted.name))
    with (dest / "manifest.csv").open(newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert len(manifest) == len(copied)
    assert {(m["source"], m["call"], m["file"]) for m in manifest} == {
        (f"{h}/{d.name}/crops/{r['crop']}", r["label"], f"{r['label']}/{h}_{d.name[:8]}_run{r['run_id']}/{r['crop']}")
        for h, d, r in copied
    }
    assert f"{len(copied)} crop(s) copied" in out and "metascope-train fit" in out

    # a person corrects one call by moving its file; sorting again copies nothing back
    wrong = dest / manifest[0]["file"]
    other = next(label.name for label in dest.iterdir() if label.is_dir() and label.name != manifest[0]["call"])
    corrected = dest / other / wrong.parent.name / wrong.name
    corrected.parent.mkdir(parents=True, exist_ok=True)
    wrong.rename(corrected)
    assert metascope_train(["sort-crops", str(results), str(dest)]) == 1
    out = capsys.readouterr().out
    assert "0 crop(s) copied" in out and f"{len(copied)} already sorted" in out
    assert not wrong.exists() and corrected.is_file()
    dataset = load_folder(dest, Classifier.load(tiny_model[0]).input_spec)
    assert len(dataset) == len(copied) and not dataset.skipped, "fit reads the sorted folder as training data"


def test_sort_crops_refuses_a_destination_inside_the_pulled_folder(pulled: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    shutil.copytree(pulled, results)
    before = tree(results)
    for dest in (results / "sorted", results / "scope1", results):
        assert metascope_train(["sort-crops", str(results), str(dest)]) == 2
        assert "inside the pulled folder" in capsys.readouterr().err
    assert tree(results) == before
