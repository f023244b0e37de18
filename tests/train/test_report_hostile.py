"""`metascope-train report` on a pulled folder someone else could write into (issue 18, F16-F22):
each test is the attack itself, through the command."""

from __future__ import annotations

import shutil
from pathlib import Path

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
