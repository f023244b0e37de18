"""From rig to report to retraining (issue 13.5): `metascope run` results pulled the way
deploy/pull.sh pulls them, `metascope-train report` on them checked in a real headless Chromium,
and the crops `run` keeps read by training's own dataset loader."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
from chromium_harness import browser
from PIL import Image
from rig_results import pull, pulled_fixture, run_rig  # noqa: F401 (the fixture `pulled`)

from edge.classify.classifier import Classifier
from train.cli import main as metascope_train
from train.dataset import load_folder

# Run in the page once it has loaded: each image's state, and whether its pixels vary (drawn on
# a canvas; data: URLs are same-origin, so the canvas may be read).
IMAGE_CHECK = """
<script>
window.addEventListener("load", () => {
  const found = [...document.images].map((img) => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    let distinct = 0;
    if (img.complete && img.naturalWidth > 0) {
      const context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      const seen = new Set();
      for (let i = 0; i < pixels.length && seen.size < 3; i += 4) {
        seen.add(pixels[i] * 65536 + pixels[i + 1] * 256 + pixels[i + 2]);
      }
      distinct = seen.size;
    }
    return {alt: img.alt, loaded: img.complete && img.naturalWidth > 0, distinct: distinct};
  });
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>
"""


def test_report_page_shows_every_image_in_a_real_browser(pulled: Path, tmp_path: Path, capsys) -> None:
    page = tmp_path / "report.html"
    assert metascope_train(["report", str(pulled), "--out", str(page)]) == 0
    assert "2 database(s) of scope1, scope2" in capsys.readouterr().out
    text = page.read_text()
    assert 'src="http' not in text and "src='http" not in text, "self-contained: nothing fetched"
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", IMAGE_CHECK + "</body>"))
    result = browser("--virtual-time-budget=20000", "--dump-dom", probe.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    check = json.loads(dom[dom.index('<pre id="image-check">') + 22 : dom.index("</pre>", dom.index("image-check"))])
    figures = [image for image in check if not image["alt"].endswith(".png")]
    crops = [image for image in check if image["alt"].endswith(".png")]
    assert len(figures) == 5, "cells over time, probability, latency, clusters, dropped frames"
    assert crops, "the gallery shows the cells' crops"
    assert all(image["loaded"] for image in check), [image["alt"] for image in check if not image["loaded"]]
    assert all(image["distinct"] >= 2 for image in check), [i["alt"] for i in check if i["distinct"] < 2]
    shown = [image["alt"] for image in crops]
    assert any("run1_track" in name for name in shown)

    screenshot = tmp_path / "report.png"
    result = browser("--window-size=1280,3000", f"--screenshot={screenshot}", page.as_uri())
    assert result.returncode == 0 and screenshot.is_file(), result.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1280, 3000)
        low, high = image.convert("L").getextrema()
        assert high - low > 100, "the screenshot shows a page, not a blank"


def test_gallery_is_sorted_by_probability_and_bounded(pulled: Path, tmp_path: Path) -> None:
    page = tmp_path / "small.html"
    assert metascope_train(["report", str(pulled), "--out", str(page), "--gallery", "5"]) == 0
    text = page.read_text()
    tiles = text.split('<div class="tile')[1:]
    assert len(tiles) == 5
    probabilities = [float(tile.split("<br>")[1].split()[0]) for tile in tiles]
    assert probabilities == sorted(probabilities, reverse=True)
    assert "Crops shown: 5 of " in text


def test_a_folder_without_pulled_results_is_named(tmp_path: Path, capsys) -> None:
    assert metascope_train(["report", str(tmp_path)]) == 2
    assert f"{tmp_path}: no pulled results here" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_crops_the_rig_kept_are_training_data_with_the_same_call(tiny_model, tmp_path: Path) -> None:
    """The loop closes: a person sorts pulled crops into label folders and training's loader
    reads them as the rig saw them (the model's call on them is the rig's first view's)."""
    config = run_rig(tmp_path / "rig", Path(tiny_model[0]), seed=3, frames=6)
    database = pull(config, tmp_path / "results", "scope1")
    import csv

    with (database / "cells.csv").open(newline="") as handle:
        tracks = [track for track in csv.DictReader(handle) if track["crop"]]
    with (database / "views.csv").open(newline="") as handle:
        first_views = {
            row["track"]: float(row["probability"])
            for row in csv.DictReader(handle)
            if row["view"] == "0" and row["orientation"] == "0"
        }
    data = tmp_path / "data"
    for track in tracks:  # sorted by the rig's own call, one group per run
        target = data / track["label"] / f"run{track['run_id']}" / track["crop"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(database / "crops" / track["crop"], target)
    classifier = Classifier.load(tiny_model[0])
    dataset = load_folder(data, classifier.input_spec)
    assert len(dataset) == len(tracks) >= 8 and not dataset.skipped
    probabilities = classifier.predict(dataset.images)
    rig = np.array([first_views[path.stem.split("_track")[1]] for path in dataset.paths])
    assert np.median(np.abs(probabilities - rig)) <= 0.05
    assert np.mean((probabilities >= 0.5) == (rig >= 0.5)) >= 0.9


def test_a_host_pulled_before_cells_and_crops_still_gets_a_page(pulled: Path, tmp_path: Path) -> None:
    """A Pi older than tracked cells and crops sent runs, frames and views only: its runs are listed
    and the page says why there is no gallery."""
    old = tmp_path / "results"
    shutil.copytree(pulled / "scope1", old / "scope1")
    (old / "scope1" / "results.sqlite").unlink()  # pulled before the results store, as its CSV files
    for database in (old / "scope1").iterdir():
        if database.is_dir():
            (database / "cells.csv").unlink()
            shutil.rmtree(database / "crops")
    assert metascope_train(["report", str(old)]) == 0
    text = (old / "report.html").read_text()
    assert '<td class="text">scope1</td>' in text and "No crops were pulled" in text


def test_a_folder_pulled_before_the_renames_reads_under_todays_names(pulled: Path, tmp_path: Path) -> None:
    """A folder an older pull.sh wrote (CSV files only, views in cells.csv, cells in tracks.csv)
    and no pull has carried over yet makes the same page as today's results store."""
    pages = {}
    for layout in ("before", "today"):
        shutil.copytree(pulled / "scope1", tmp_path / layout / "scope1")
        if layout == "before":
            (tmp_path / layout / "scope1" / "results.sqlite").unlink()
        for database in (tmp_path / layout / "scope1").iterdir():
            if layout == "before" and database.is_dir():
                (database / "cells.csv").rename(database / "tracks.csv")
                (database / "views.csv").rename(database / "cells.csv")
        assert metascope_train(["report", str(tmp_path / layout)]) == 0
        page = (tmp_path / layout / "report.html").read_text().replace(str(tmp_path / layout), "RESULTS")
        pages[layout] = re.sub(r"data:image/png;base64,[^\"]+|\d{4}-\d\d-\d\d[ T][\d:.]+", "", page)
    assert "scope1" in pages["today"] and pages["before"] == pages["today"]
