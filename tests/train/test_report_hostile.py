"""`metascope-train report` on a pulled folder someone else could write into (issue 18, F16-F22):
each test is the attack itself, through the command."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import re
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import REPO
from PIL import Image
from rig_results import pulled_fixture  # noqa: F401 (the fixture `pulled`)

from train.cli import main as metascope_train


def copy_of(pulled: Path, tmp_path: Path) -> Path:
    """A copy to attack. The attacks edit CSV files, so the copy is a folder of CSV files only (its
    results.sqlite removed), as a pull.sh before the results store left it: the report reads those."""
    results = tmp_path / "results"
    shutil.copytree(pulled, results, symlinks=True)
    for store in results.glob("*/results.sqlite"):
        store.unlink()
    return results


def test_a_planted_symlink_at_the_temporary_name_is_never_followed(pulled: Path, tmp_path: Path) -> None:
    """F17: the page is written through a temporary file beside it; a symlink planted where the
    temporary goes must not make the report overwrite what the link points to."""
    results = copy_of(pulled, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("a file the user owns\n")
    (results / ".report.html.tmp").symlink_to(victim)
    assert metascope_train(["report", str(results)]) == 0
    assert victim.read_text() == "a file the user owns\n"
    page = results / "report.html"
    assert page.is_file() and not page.is_symlink() and "<h1>metascope results" in page.read_text()


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"data:image/png;base64,([^\"']+)", page)]


def crops_of(results: Path, host: str = "scope1") -> list[Path]:
    (database,) = [folder for folder in (results / host).iterdir() if folder.is_dir()]
    return sorted((database / "crops").iterdir())


def test_a_crop_that_is_a_link_out_of_the_folder_or_not_a_png_is_never_embedded(pulled: Path, tmp_path: Path) -> None:
    """F16: a crop named in cells.csv but planted as a symlink to a private file, or to a PNG
    outside the results folder, or a file that is not a real PNG, never reaches a page meant to be
    mailed; the page names each, and shows the others."""
    results = copy_of(pulled, tmp_path)
    secret = tmp_path / "shadow"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nroot:SECRET-HASH:19000:0:99999:7:::\n")
    outside_png = tmp_path / "outside.png"
    Image.new("L", (40, 40), 77).save(outside_png)
    link, link_to_png, text, broken, *kept = crops_of(results)
    for crop, target in ((link, secret), (link_to_png, outside_png)):
        crop.unlink()
        crop.symlink_to(target)
    text.write_bytes(b"SECRET-TEXT that is not an image\n")
    broken.write_bytes(broken.read_bytes()[:60] + b"SECRET-TAIL")
    page_path = tmp_path / "page.html"
    assert metascope_train(["report", str(results), "--out", str(page_path)]) == 0
    page = page_path.read_text()
    for image in embedded_images(page):
        assert b"SECRET" not in image
        with Image.open(io.BytesIO(image)) as decoded:
            assert decoded.getextrema() != (77, 77), "the PNG outside the folder was embedded"
    refused = page[page.index("Could not read") :]
    for crop in (link, link_to_png, text, broken):
        assert f'alt="{crop.name}"' not in page
        assert crop.name in refused, f"the page names {crop.name} as not read"
    assert all(f'alt="{crop.name}"' in page for crop in kept)
    assert "; 4 could not be read (named under Could not read)" in page, "the gallery's count says so"


def png_with_a_chunk_of(size: int, path: Path) -> None:
    """A valid PNG of a small crop carrying ``size`` bytes in a private ancillary chunk (which
    any PNG reader skips): a file that is a PNG and 100 MB."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 120).save(buffer, format="PNG")
    data = buffer.getvalue()
    end = data.rindex(b"IEND") - 4
    chunk_type = b"prVt"
    with path.open("wb") as handle:
        handle.write(data[:end])
        handle.write(size.to_bytes(4, "big") + chunk_type)
        crc = zlib.crc32(chunk_type)
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            handle.write(block)
            crc = zlib.crc32(block, crc)
        handle.write(crc.to_bytes(4, "big") + data[end:])


def noise_png(path: Path, side: int, mode: str, seed: int) -> None:
    channels = (side, side) if mode == "L" else (side, side, 3)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, channels, dtype=np.uint8), mode).save(path)


def test_the_page_stays_small_whatever_the_crops_weigh(pulled: Path, tmp_path: Path) -> None:
    """F22: one 100 MB crop made a 140 MB page. A crop far larger than a rig's is left out and
    named, a large one is shown as a thumbnail, and the images of the page keep to a total budget
    (--max-mb), saying how many crops that left out."""
    results = copy_of(pulled, tmp_path)
    huge, *large = crops_of(results)[:4]
    png_with_a_chunk_of(100 << 20, huge)
    for seed, crop in enumerate(large):
        noise_png(crop, 1900, "L", seed)  # 3.6 MB each: every pixel noise
    page_path = tmp_path / "page.html"
    assert metascope_train(["report", str(results), "--out", str(page_path)]) == 0
    page = page_path.read_text()
    assert len(page) < 2_000_000, f"{len(page)} bytes"
    tiles = dict(re.findall(r'alt="([^"]+[.]png)"[^>]*src="data:image/png;base64,([^"]+)"', page))
    for crop in large:
        with Image.open(io.BytesIO(base64.b64decode(tiles[crop.name]))) as decoded:
            assert max(decoded.size) <= 208, f"{crop.name} is shown as a thumbnail, not {decoded.size}"
    assert huge.name in page[page.index("Could not read") :]

    every = crops_of(results) + crops_of(results, "scope2")
    for seed, crop in enumerate(every):
        noise_png(crop, 200, "RGB", seed)
    assert metascope_train(["report", str(results), "--out", str(page_path), "--max-mb", "1"]) == 0
    page = page_path.read_text()
    shown = page.count('<div class="tile')
    assert 0 < shown < len(every)
    assert len(page) < 1_600_000, f"{len(page)} bytes: 1 MB of images and their base64"
    assert f"{len(every) - shown} crop(s) left out: the page's images reached --max-mb 1" in page


def rewrite_csv(path: Path, change: Callable[[dict[str, str]], None], fields: list[str] | None = None) -> None:
    """``path`` with ``change`` applied to every row (and ``fields`` as its header, when given)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields or list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            change(row)
            writer.writerow(row)


def test_dollar_signs_in_a_host_or_run_id_are_text_not_mathtext(pulled: Path, tmp_path: Path) -> None:
    """F18: matplotlib parses text between two $ as mathtext, and an unbalanced formula stops
    every figure. A host folder or a pulled run_id holding $...$ is shown as written."""
    results = copy_of(pulled, tmp_path)
    host = r"lab$\alpha^{$"
    (results / "scope1").rename(results / host)
    run_id = r"7$\nosuchcommand{$"
    database = next(folder for folder in (results / "scope2").iterdir() if folder.is_dir())
    rewrite_csv(database / "runs.csv", lambda row: row.update(id=run_id))
    for table in ("cells", "views", "frames"):
        rewrite_csv(database / f"{table}.csv", lambda row: row.update(run_id=run_id))
    assert metascope_train(["report", str(results)]) == 0
    page = (results / "report.html").read_text()
    assert html.escape(host) in page and html.escape(run_id) in page
    assert len(embedded_images(page)) >= 5 + 2, "every figure and the crops"


def database_of(results: Path, host: str) -> Path:
    return next(folder for folder in (results / host).iterdir() if folder.is_dir())


def set_first(path: Path, column: str, values: list[str]) -> None:
    """``column`` of the first rows of ``path`` set to ``values``, one each."""
    given = iter(values)
    rewrite_csv(path, lambda row: row.update({column: next(given, row[column])}))


def test_a_time_that_is_not_one_leaves_out_its_row_only(pulled: Path, tmp_path: Path) -> None:
    """F19: one time value a rig never writes (`yesterday`, year 1, year 9999) stopped the whole
    report. Such rows are left out and counted, the page naming their files and lines."""
    results = copy_of(pulled, tmp_path)
    set_first(database_of(results, "scope1") / "cells.csv", "first_seen_at", ["yesterday", "0001-01-01T00:00:00Z",
              "9999-12-31T23:59:59.999999Z"])  # fmt: skip
    set_first(database_of(results, "scope2") / "frames.csv", "captured_at", ["9999-12-31T23:59:59Z"])
    set_first(database_of(results, "scope2") / "runs.csv", "ended_at", ["yesterday"])
    assert metascope_train(["report", str(results)]) == 0
    page = (results / "report.html").read_text()
    refused = html.unescape(page[page.index("Could not read") :])
    assert re.search(r"scope1/\w+/cells.csv: 3 row\(s\) left out", refused), refused
    assert "line 2 (first_seen_at 'yesterday' is not a time)" in refused
    assert re.search(r"scope2/\w+/frames.csv: 1 row\(s\) left out", refused)
    assert re.search(r"scope2/\w+/runs.csv: 1 row\(s\) left out", refused)
    assert len(embedded_images(page)) >= 5 + 2, "every figure and the crops"


def test_tables_that_cannot_be_read_are_named_and_the_rest_is_reported(pulled: Path, tmp_path: Path, capsys) -> None:
    """F20: cells or frames without run_id, a renamed id column, a short row, a byte-order mark
    and runs.csv linked to /etc/passwd each stopped the report. Each host's page is made from
    what can be read, and what could not is named on the page and on stderr."""
    results = tmp_path / "results"
    for host in ("cells-no-run-id", "frames-no-run-id", "renamed-id", "short-row", "bom", "passwd"):
        # CSV files only (as a pull.sh before the results store left them): the attacks edit them
        shutil.copytree(pulled / "scope1", results / host, ignore=shutil.ignore_patterns("results.sqlite"))
    for table, host in (("cells", "cells-no-run-id"), ("frames", "frames-no-run-id")):
        path = database_of(results, host) / f"{table}.csv"
        fields = path.read_text().splitlines()[0].split(",")
        rewrite_csv(path, lambda row: None, [field for field in fields if field != "run_id"])
    runs = database_of(results, "renamed-id") / "runs.csv"
    runs.write_text(runs.read_text().replace("id,", "run,", 1))
    cells = database_of(results, "short-row") / "cells.csv"
    lines = cells.read_text().splitlines(keepends=True)
    cells.write_text("".join([*lines[:2], "3,1,3\n", *lines[3:]]))
    runs = database_of(results, "bom") / "runs.csv"
    runs.write_bytes(b"\xef\xbb\xbf" + runs.read_bytes())
    runs = database_of(results, "passwd") / "runs.csv"
    runs.unlink()
    runs.symlink_to("/etc/passwd")

    assert metascope_train(["report", str(results)]) == 0
    stderr = capsys.readouterr().err
    page = (results / "report.html").read_text()
    refused = html.unescape(page[page.index("Could not read") :])
    for host, problem in (
        ("cells-no-run-id", r"cells.csv: no run_id column"),
        ("frames-no-run-id", r"frames.csv: no run_id column"),
        ("renamed-id", r"runs.csv: no id column"),
        ("short-row", r"cells.csv: 1 row\(s\) left out: line 3 \(3 of 17 fields\)"),
        ("passwd", r"runs.csv: a link out of the results folder"),
    ):
        assert re.search(rf"{host}/\w+/{problem}", refused), (host, refused)
        assert re.search(rf"could not read {host}/\w+/{problem}", stderr), (host, stderr)
    assert "bom/" not in refused and '<td class="text">bom</td>' in page, "a byte-order mark is read past"
    assert "root:" not in page
    for host in ("cells-no-run-id", "frames-no-run-id", "short-row", "passwd"):
        assert f"{host}, " in page or f", {host}" in page, f"{host} is in the page's title"
    assert page.count('<td class="text">cells-no-run-id</td>') == 1, "its run is listed"


def test_a_results_store_that_is_a_fifo_or_a_link_out_is_named_not_waited_on(pulled: Path, tmp_path: Path) -> None:
    """F20, the results store: sqlite opening a FIFO planted as HOST/results.sqlite waited for a
    writer forever, and a link out of the folder was opened wherever it led. Each is named, and
    that host's CSV files are read instead. Run in a child with a time limit: a regression fails
    here instead of hanging the suite."""
    results = tmp_path / "results"
    shutil.copytree(pulled, results)
    (results / "scope1" / "results.sqlite").unlink()
    os.mkfifo(results / "scope1" / "results.sqlite")
    elsewhere = tmp_path / "elsewhere.sqlite"
    shutil.move(results / "scope2" / "results.sqlite", elsewhere)
    (results / "scope2" / "results.sqlite").symlink_to(elsewhere)
    command = [sys.executable, "-m", "train", "report", str(results)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "could not read scope1/results.sqlite: not a regular file" in result.stderr
    assert "could not read scope2/results.sqlite: a link out of the results folder" in result.stderr
    page = (results / "report.html").read_text()
    assert '<td class="text">scope1</td>' in page and '<td class="text">scope2</td>' in page, "read from CSV"
