"""The `metascope` command's own surface: help when called bare, words a reader can trust."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import REPO

from edge.cli import main
from edge.store import ResultStore, RunInfo


def test_bare_metascope_prints_help_listing_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "edge"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("classify", "bench", "run", "status", "export", "doctor"):
        assert command in result.stdout
    assert "error" not in result.stderr


def test_status_of_a_run_without_an_end_says_so_plainly(tmp_path: Path, capsys) -> None:
    store = ResultStore(tmp_path / "metascope.db")
    store.start_run(RunInfo("tiny", "0" * 64, "ai_edge_litert", "synthetic", "cells", 0.5, 192, {}))
    store.commit()
    store._db.close()  # as a kill -9 leaves it: no end
    with sqlite3.connect(tmp_path / "metascope.db") as db:
        assert db.execute("SELECT ended_at FROM runs").fetchone()[0] is None
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "ended not ended" not in text
    assert "still running, or stopped without closing" in text
