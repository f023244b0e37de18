"""The `metascope` command's own surface: help when called bare, words a reader can trust."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import REPO

from edge.cli import main
from edge.record.store import ResultStore, RunInfo


def test_bare_metascope_prints_help_listing_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "edge"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("classify", "bench", "run", "status", "export", "doctor", "live"):
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


def test_native_notices_are_dropped_and_anything_else_passes(capfd) -> None:
    """TensorFlow Lite's XNNPACK notice bypasses Python; it is dropped, a real message is not."""
    import os

    from edge.classify.native_noise import native_noise_filtered

    with native_noise_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something real went wrong\n")
    assert capfd.readouterr().err == "ERROR: something real went wrong\n"


def test_classify_writes_only_its_own_lines_on_stderr(tiny_model, tmp_path: Path) -> None:
    from PIL import Image

    from edge.capture.synthetic_cells import synthetic_batch

    crops, _ = synthetic_batch(2, seed=5)
    for index, crop in enumerate(crops):
        Image.fromarray(crop).save(tmp_path / f"{index}.png")
    result = subprocess.run(
        [sys.executable, "-m", "edge", "classify", str(tmp_path), "--model", str(tiny_model[0])],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["metascope classify"]
