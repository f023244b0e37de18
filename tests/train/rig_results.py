"""Results of `metascope run` pulled the way deploy/pull.sh pulls them, without ssh: the report's
and sort-crops' tests start from these (the ssh half of pull.sh is tests/test_deploy_pull.py's)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from edge.cli import main as metascope


def pull_merge(*args: Path | str) -> None:
    """The desktop half of pull.sh, run as pull.sh runs it."""
    command = [sys.executable, str(REPO / "deploy" / "pull_merge.py"), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def metascope_output(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert metascope(list(args)) == 0
    return out.getvalue()


def run_rig(folder: Path, model: Path, seed: int, frames: int = 8) -> Path:
    """A rig's state directory after `metascope run` on a still synthetic field."""
    config = folder / "metascope.toml"
    folder.mkdir(parents=True)
    config.write_text(
        f'state_dir = "{folder / "state"}"\n[model]\npath = "{model}"\n'
        f'[source]\nkind = "still"\nsynthetic_cells = 12\nsynthetic_seed = {seed}\n'
        "[tracking]\nview_interval_frames = 1\n[snapshots]\nevery_n_frames = 4\n"
    )
    assert metascope(["run", "--config", str(config), "--max-frames", str(frames)]) == 0
    return config


def pull(config: Path, dest: Path, host: str) -> Path:
    """What `deploy/pull.sh HOST --dest DEST` leaves, made without ssh: the same exports, the
    same merge, the same folders copied. Returns the database's folder."""
    work = dest / host / ".pull.test"
    work.mkdir(parents=True)
    (work / "status.json").write_text(metascope_output("status", "--config", str(config), "--json"))
    status = json.loads((work / "status.json").read_text())
    for table in ("runs", "cells", "views", "frames"):
        (work / f"{table}.csv").write_text(metascope_output("export", "--config", str(config), "--table", table))
    pull_merge("prepare", dest / host, work / "status.json", work / "runs.csv", work / "answer")
    database = Path((work / "answer").read_text().splitlines()[0])
    pull_merge("merge", dest / host, work, host)
    pull_merge("csv", dest / host)
    for folder in ("snapshots", "crops"):
        if Path(status[folder]["folder"]).is_dir():  # as pull.sh: a folder the rig has not made is none
            shutil.copytree(status[folder]["folder"], database / folder)
    shutil.rmtree(work)
    return database


@pytest.fixture(scope="session", name="pulled")
def pulled_fixture(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    """Two microscopes' results pulled into one folder (a test module imports this fixture).
    Shared by every test: one that changes it works on a copy."""
    root = tmp_path_factory.mktemp("rigs")
    dest = root / "results"
    for seed, host in enumerate(("scope1", "scope2")):
        pull(run_rig(root / host, Path(tiny_model[0]), seed), dest, host)
    return dest
