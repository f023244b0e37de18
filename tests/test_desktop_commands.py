"""Desktop use of the `metascope` commands (issue 13.6): `run --snapshot-every`, `status` after
the demo, and a `doctor` that leaves nothing behind where it runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge import demo
from edge.cli import main


@pytest.fixture
def desktop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder to run in, with no systemd state directory and no system config."""
    import edge.config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(edge.config, "SYSTEM_STATE_DIR", tmp_path / "no-system-state")
    monkeypatch.setattr(edge.config, "SYSTEM_CONFIG", tmp_path / "no-system-config.toml")
    return tmp_path


def test_snapshot_every_sets_the_snapshot_schedule(tiny_model, tmp_path: Path) -> None:
    args = ["run", "--source", "synthetic", "--model", str(tiny_model[0]), "--state-dir", str(tmp_path)]
    assert main([*args, "--max-frames", "6", "--snapshot-every", "2"]) == 0
    with sqlite3.connect(tmp_path / "metascope.db") as db:
        snapshots = [row[0] for row in db.execute("SELECT snapshot FROM frames ORDER BY id")]
    assert [name is not None for name in snapshots] == [False, True, False, True, False, True]
    assert main([*args, "--max-frames", "2", "--snapshot-every", "0"]) == 0
    assert len(list((tmp_path / "snapshots").glob("*.jpg"))) == 3


def test_snapshot_every_refuses_a_negative_count(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--state-dir", str(tmp_path), "--snapshot-every", "-1"])
    assert exit_info.value.code == 2
    assert "--snapshot-every" in capsys.readouterr().err


def test_plain_status_finds_the_demo_results(tiny_model, desktop: Path, capsys) -> None:
    assert demo.main(["--model", str(tiny_model[0]), "--frames", "3"]) == 0
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "totals:      1 runs, 3 frames" in out and "database:    var/metascope.db" in out
    assert main(["export", "--table", "runs", "--format", "csv"]) == 0
    assert "still" in capsys.readouterr().out  # the demo's run, read without --config


def test_doctor_creates_nothing_where_it_runs(tiny_model, desktop: Path, capsys) -> None:
    assert main(["doctor", "--model", str(tiny_model[0])]) in (0, 1)  # no camera here: FAIL allowed
    out = capsys.readouterr().out
    assert "PASS  state_dir:" in out and "does not exist yet" in out
    assert sorted(path.name for path in desktop.iterdir()) == []


def test_doctor_fails_a_state_dir_that_is_a_file(tiny_model, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    assert main(["doctor", "--state-dir", str(blocker), "--model", str(tiny_model[0])]) == 1
    assert "FAIL  state_dir:" in capsys.readouterr().out
