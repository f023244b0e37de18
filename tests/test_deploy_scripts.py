"""What every deploy script promises: shellcheck-clean, strict mode, --help; and that the
package install.sh puts on a Pi (a regular, non-editable pip install) carries all of edge/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from sshd_harness import require_tools

LIBRARY = REPO / "deploy" / "ssh_common.sh"  # sourced by push.sh and pull.sh, not run
SCRIPTS = sorted(path for path in (REPO / "deploy").glob("*.sh") if path != LIBRARY)
SHELL_FILES = [*SCRIPTS, REPO / ".ci" / "run"]


def test_the_deploy_scripts_exist() -> None:
    assert [path.name for path in SCRIPTS] == ["install.sh", "pull.sh", "push.sh"]


def test_shellcheck_is_clean() -> None:
    require_tools("shellcheck")
    files = [*map(str, SHELL_FILES), str(LIBRARY)]
    result = subprocess.run(["shellcheck", "-x", *files], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout


def test_the_scripts_are_executable_in_git() -> None:
    """The README runs ./deploy/push.sh: a 100644 file in git fails with "Permission denied"."""
    listed = subprocess.run(["git", "ls-files", "-s", "deploy"], capture_output=True, text=True, cwd=REPO)
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip("not a git checkout")
    modes = {line.split("\t")[1]: line.split()[0] for line in listed.stdout.splitlines()}
    scripts = {path: mode for path, mode in modes.items() if path.endswith(".sh")}
    assert scripts and all(mode == "100755" for mode in scripts.values()), scripts


@pytest.mark.parametrize("script", SHELL_FILES, ids=lambda path: path.name)
def test_strict_mode(script: Path) -> None:
    assert "\nset -euo pipefail\n" in script.read_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_help(script: Path) -> None:
    result = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ")


def test_a_regular_install_carries_every_edge_module(tmp_path: Path) -> None:
    """install.sh runs `pip install PROJECT[edge]` (not editable): every module of edge/ must
    be in what that installs, or `metascope` breaks on the Pi only."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for part in ("edge", "train"):
        shutil.copytree(REPO / part, source / part, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    target = tmp_path / "site"
    # No build isolation and no dependencies: offline, with the setuptools this venv has.
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "edge").rglob("*.py") if "__pycache__" not in p.parts}
    installed = {p.relative_to(target).as_posix() for p in (target / "edge").rglob("*.py")}
    assert expected - installed == set(), "modules a non-editable install leaves out"
    # and the command starts from it (PYTHONPATH puts the installed copy before the checkout's)
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-P", "-m", "edge", "export", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
