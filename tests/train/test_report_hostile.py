"""`metascope-train report` on a pulled folder someone else could write into (issue 18, F16-F22):
each test is the attack itself, through the command."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

from PIL import Image
from rig_results import pulled_fixture  # noqa: F401 (the fixture `pulled`)

from train.cli import main as metascope_train


def copy_of(pulled: Path, tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(pulled, results, symlinks=True)
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
