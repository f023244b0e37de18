"""deploy/pull.sh against a real sshd on loopback and a results store filled by the real
pipeline (`metascope run --source synthetic` with the tiny model)."""

from __future__ import annotations

import csv
import io
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from sshd_harness import ALIAS, DEAD_ALIAS, SECOND_ALIAS, SshServer

from edge.errors import ExitCode

PULL = REPO / "deploy" / "pull.sh"
# What the "remote" runs: this checkout's metascope, through the venv's python (PYTHONPATH: the
# ssh session starts elsewhere, where an installed metascope of another checkout would answer).
REMOTE_METASCOPE = f"env PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m edge"
PULLED = ("cells", "views", "frames", "runs")  # what a pull brings: HOST/<database id>/<table>.csv
FIRST_LAYOUT = {"cells": "views", "frames": "frames", "runs": "runs"}  # the first pull.sh's files, by table
COLUMNS_BEFORE_V6 = {"frames": {"detections": "cells"}, "runs": {"views": "cells", "cells": "tracks"}}

pytestmark = pytest.mark.slow


class Store:
    """A results store under a private state dir, filled by `metascope run`."""

    def __init__(self, folder: Path, model: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.state = folder / "state"
        self.config = folder / "metascope.toml"
        self.config.write_text(
            f'state_dir = "{self.state}"\n'
            f'[model]\npath = "{model}"\n'
            '[source]\nkind = "synthetic"\n'
            "[snapshots]\nevery_n_frames = 2\n"
        )

    def run(self, frames: int) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(self.config), "--max-frames", str(frames)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr

    def rows(self, table: str) -> list[list[str]]:
        """The header and rows as CSV spells them (None is an empty field)."""
        with sqlite3.connect(self.state / "metascope.db") as db:
            cursor = db.execute(f"SELECT * FROM {table} ORDER BY id")
            header = [column[0] for column in cursor.description]
            return [header] + [["" if value is None else str(value) for value in row] for row in cursor]

    def old_rows(self, table: str) -> list[list[str]]:
        """``rows`` under the column names before schema 6 (what an older pull.sh wrote)."""
        header, *rows = self.rows(table)
        before = COLUMNS_BEFORE_V6.get(table, {})
        return [[before.get(column, column) for column in header], *rows]

    def snapshots(self) -> set[str]:
        return {path.name for path in (self.state / "snapshots").iterdir()}

    def crops(self) -> set[str]:
        return {path.name for path in (self.state / "crops").iterdir()}

    def database_id(self) -> str:
        with sqlite3.connect(self.state / "metascope.db") as db:
            return db.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()[0]

    def pulled(self, dest: Path, host: str = ALIAS) -> Path:
        """Where a pull keeps this store's rows: one folder per host and database."""
        return dest / host / self.database_id()


@pytest.fixture
def store(tmp_path: Path, tiny_model) -> Store:
    return Store(tmp_path / "pi", Path(tiny_model[0]))


def pull(sshd: SshServer, store: Store | None, dest: Path, *extra: str, host: str = ALIAS):
    args = ["bash", str(PULL), host, "-F", str(sshd.ssh_config), "--dest", str(dest)]
    args += ["--remote-command", REMOTE_METASCOPE]
    if store is not None:
        args += ["--remote-config", str(store.config)]
    return subprocess.run(args + list(extra), capture_output=True, text=True, timeout=120)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def snapshot_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pull_copies_the_store_then_only_new_rows(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    store.run(frames=3)
    dest = tmp_path / "results"
    first = pull(sshd, store, dest)
    assert first.returncode == 0, first.stderr
    pulled = store.pulled(dest)
    assert (dest / ALIAS / "CURRENT").read_text().strip() == store.database_id()
    assert (dest / ALIAS / "LAYOUT").read_text().strip() == "metascope-pull/4"
    assert (dest / ALIAS / "results.sqlite").is_file(), "every row pulled is in the host's results store"
    for table in PULLED:
        assert read_csv(pulled / f"{table}.csv") == store.rows(table), table
    assert len(store.rows("views")) > 1, "the synthetic frames should hold views"
    assert len(store.rows("cells")) > 1, "the cells of a stopped run are closed"
    assert {p.name for p in (pulled / "snapshots").iterdir()} == store.snapshots() != set()
    # the cells' crops come along, each named by its cell's row
    cells = read_csv(pulled / "cells.csv")
    named = {row[cells[0].index("crop")] for row in cells[1:]} - {""}
    assert named == {p.name for p in (pulled / "crops").iterdir()} == store.crops() != set()
    before = {table: (pulled / f"{table}.csv").read_bytes() for table in PULLED}

    again = pull(sshd, store, dest)
    assert again.returncode == 0, again.stderr
    assert {table: (pulled / f"{table}.csv").read_bytes() for table in PULLED} == before
    assert "views: no new rows" in again.stdout

    store.run(frames=3)
    old_views = len(before["views"].splitlines()) - 1
    new_views = len(store.rows("views")) - 1 - old_views
    third = pull(sshd, store, dest)
    assert third.returncode == 0, third.stderr
    assert f"views: {new_views} new rows" in third.stdout
    for table in ("cells", "views", "frames"):
        # appended after what was there, byte for byte
        assert (pulled / f"{table}.csv").read_bytes().startswith(before[table])
    for table in PULLED:
        rows = read_csv(pulled / f"{table}.csv")
        assert rows == store.rows(table), table
        ids = [int(row[0]) for row in rows[1:]]
        assert ids == sorted(set(ids)), f"{table}: duplicate or unordered ids"
    # the first run's row now has its end time: runs are refreshed, not frozen at first sight
    assert read_csv(pulled / "runs.csv")[1][2] != ""
    assert {p.name for p in (pulled / "snapshots").iterdir()} == store.snapshots()


def test_rows_pulled_before_a_schema_change_get_its_new_columns_empty(
    sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    """A Pi upgraded to a metascope whose database has more columns (views: track...) must not
    stop the pulls into a folder that holds the older, narrower rows (here pulled by the CSV-only
    layout before schema 4, carried over into the results store)."""
    store.run(frames=2)
    dest = tmp_path / "results"
    folder = store.pulled(dest)
    folder.mkdir(parents=True)
    narrow = [row[:-3] for row in store.rows("views")]  # as a pull before schema 4 left it
    with (folder / "views.csv").open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(narrow)
    (dest / ALIAS / "LAYOUT").write_text("metascope-pull/3\n")
    store.run(frames=2)
    result = pull(sshd, store, dest, "--no-snapshots")
    assert result.returncode == 0, result.stderr
    assert "views: new columns track, view, orientation" in result.stdout
    rows = read_csv(folder / "views.csv")
    assert rows[0] == store.rows("views")[0]
    assert rows[1 : len(narrow)] == [[*row, "", "", ""] for row in narrow[1:]]
    assert rows[len(narrow) :] == store.rows("views")[len(narrow) :]


def test_two_microscopes_pull_into_one_place(sshd: SshServer, store: Store, tiny_model, tmp_path: Path) -> None:
    other = Store(tmp_path / "pi-b", Path(tiny_model[0]))
    store.run(frames=2)
    other.run(frames=1)
    dest = tmp_path / "results"
    assert pull(sshd, store, dest).returncode == 0
    assert pull(sshd, other, dest, host=f"{sshd.user}@{SECOND_ALIAS}").returncode == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted([ALIAS, SECOND_ALIAS])
    assert read_csv(store.pulled(dest) / "views.csv") == store.rows("views")
    assert read_csv(other.pulled(dest, SECOND_ALIAS) / "views.csv") == other.rows("views")


def test_since_limits_views_and_frames_but_keeps_every_run(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    store.run(frames=2)
    store.run(frames=2)
    second_start = store.rows("runs")[2][1]
    result = pull(sshd, store, tmp_path / "results", "--since", second_start, "--no-snapshots")
    assert result.returncode == 0, result.stderr
    pulled = store.pulled(tmp_path / "results")
    views = read_csv(pulled / "views.csv")
    run_column = views[0].index("run_id")
    assert views[1:] and {row[run_column] for row in views[1:]} == {"2"}
    assert read_csv(pulled / "runs.csv") == store.rows("runs")
    assert not (pulled / "snapshots").exists()


def test_failed_pulls_say_why_and_leave_earlier_results_alone(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    store.run(frames=2)
    dest = tmp_path / "results"
    assert pull(sshd, store, dest).returncode == 0
    store.run(frames=2)  # new rows are waiting, so a pull that went wrong would have something to write
    held = snapshot_of(dest)

    unreachable = pull(sshd, store, dest, host=DEAD_ALIAS)
    assert unreachable.returncode == ExitCode.UNREACHABLE
    assert f"cannot reach {DEAD_ALIAS} over ssh" in unreachable.stderr
    assert not (dest / DEAD_ALIAS).exists(), "a failed first pull leaves no empty folder"

    missing = pull(sshd, store, dest, "--remote-command", "/nonexistent/bin/metascope")
    assert missing.returncode == ExitCode.NOT_INSTALLED
    assert f"metascope is not installed on {ALIAS}" in missing.stderr

    empty = tmp_path / "empty-state"
    empty.mkdir()
    no_database = tmp_path / "no-database.toml"
    no_database.write_text(f'state_dir = "{empty}"\n')
    failed = pull(sshd, None, dest, "--remote-config", str(no_database))
    assert failed.returncode == ExitCode.BAD_EXPORT
    assert "asking metascope status" in failed.stderr and "no results database" in failed.stderr

    assert snapshot_of(dest) == held
    assert not [p for p in (dest / ALIAS).iterdir() if p.name.startswith(".pull.") and p.is_dir()]


def test_a_replaced_database_gets_its_own_folder_and_the_old_rows_stay(
    sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    """A re-flashed Pi (or `rm metascope.db`) starts its ids at 1 again: those rows must not be
    taken for rows already pulled, nor overwrite the old runs."""
    store.run(frames=2)
    dest = tmp_path / "results"
    assert pull(sshd, store, dest, "--no-snapshots").returncode == 0
    old = store.pulled(dest)
    held = snapshot_of(old)
    for path in store.state.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    store.run(frames=3)
    again = pull(sshd, store, dest, "--no-snapshots")
    assert again.returncode == 0, again.stderr
    new = store.pulled(dest)
    assert new != old and snapshot_of(old) == held
    for table in PULLED:
        assert read_csv(new / f"{table}.csv") == store.rows(table), table
    assert (dest / ALIAS / "CURRENT").read_text().strip() == new.name


def test_a_folder_pulled_by_the_first_layout_is_moved_into_its_database(
    sshd: SshServer, store: Store, tiny_model, tmp_path: Path
) -> None:
    store.run(frames=2)
    dest = tmp_path / "results"
    first_layout = dest / ALIAS
    first_layout.mkdir(parents=True)
    for name, table in FIRST_LAYOUT.items():  # what the first pull.sh left: CSVs straight in the host folder
        with (first_layout / f"{name}.csv").open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(store.old_rows(table))
    store.run(frames=2)
    moved = pull(sshd, store, dest, "--no-snapshots")
    assert moved.returncode == 0, moved.stderr
    assert "moved the rows an earlier version pulled" in moved.stdout
    assert not (first_layout / "cells.csv").exists()
    for table in FIRST_LAYOUT.values():
        assert read_csv(store.pulled(dest) / f"{table}.csv") == store.rows(table), table
    assert "new rows (after id" in moved.stdout, "carried on from where the earlier pull stopped"


def test_a_first_layout_folder_of_another_database_is_set_aside(
    sshd: SshServer, store: Store, tiny_model, tmp_path: Path
) -> None:
    other = Store(tmp_path / "other-pi", Path(tiny_model[0]))
    other.run(frames=1)
    store.run(frames=2)
    dest = tmp_path / "results"
    first_layout = dest / ALIAS
    first_layout.mkdir(parents=True)
    for name, table in FIRST_LAYOUT.items():  # another database's rows under this host's name (a re-flash)
        with (first_layout / f"{name}.csv").open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(other.old_rows(table))
    result = pull(sshd, store, dest, "--no-snapshots")
    assert result.returncode == 0, result.stderr
    assert "from another database than the one on the host now" in result.stdout
    for table in FIRST_LAYOUT.values():
        assert read_csv(first_layout / "earlier" / f"{table}.csv") == other.rows(table), table
        assert read_csv(store.pulled(dest) / f"{table}.csv") == store.rows(table), table


def test_a_host_that_sends_impossible_ids_changes_nothing(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    """One crafted id of 1e20 must not poison the pulled CSVs (every later pull would fail)."""
    store.run(frames=2)
    dest = tmp_path / "results"
    assert pull(sshd, store, dest, "--no-snapshots").returncode == 0
    held = snapshot_of(dest)
    liar = tmp_path / "liar.sh"
    liar.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"--table views"*) printf \'id,frame_id\\n100000000000000000000,1\\n\' ;;\n'
        f'*) exec {REMOTE_METASCOPE} "$@" ;; esac\n'
    )
    liar.chmod(0o755)
    result = pull(sshd, store, dest, "--no-snapshots", "--remote-command", str(liar))
    assert result.returncode == ExitCode.BAD_EXPORT
    assert "is not a row id" in result.stderr
    assert snapshot_of(dest) == held


def test_default_remote_command_reports_a_host_without_metascope(sshd: SshServer, tmp_path: Path) -> None:
    probe = sshd.ssh("command -v metascope || test -e /opt/metascope/venv/bin/metascope")
    if probe.returncode == 0:
        pytest.skip("metascope is installed on this machine, so it is not a host without it")
    args = ["bash", str(PULL), ALIAS, "-F", str(sshd.ssh_config), "--dest", str(tmp_path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == ExitCode.NOT_INSTALLED
    assert f"metascope is not installed on {ALIAS}" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no HOST given"),
        ([ALIAS, "--dest"], "--dest needs a value"),
        ([ALIAS, "--bogus"], "unknown option --bogus"),
        ([ALIAS, "other"], "only one HOST"),
        (["../x"], "does not make a usable folder name"),
    ],
)
def test_bad_arguments_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(PULL), *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE
    assert message in result.stderr
    assert not any(tmp_path.iterdir()), "bad arguments must not create anything"


# ------------------------------------------------ desktops and Pis of different versions
def on_release(release: Path) -> str:
    """The remote command of a Pi that runs the given release's metascope."""
    return f"cd {shlex.quote(str(release))} && env PYTHONPATH=. {shlex.quote(sys.executable)} -m edge"


def run_release(release: Path, store: Store, frames: int) -> None:
    """`metascope run` of that release on the store (its schema stays the release's)."""
    command = [sys.executable, "-m", "edge", "run", "--config", str(store.config), "--max-frames", str(frames)]
    # cwd: `python -m` puts the current folder first on sys.path, where today's edge/ may be.
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=release,
                            env={**os.environ, "PYTHONPATH": str(release)})  # fmt: skip
    assert result.returncode == 0, result.stderr


def pull_with(release: Path, sshd: SshServer, store: Store, dest: Path, remote: str) -> subprocess.CompletedProcess:
    """That release's deploy/pull.sh against a Pi running ``remote``."""
    args = ["bash", str(release / "deploy" / "pull.sh"), ALIAS, "-F", str(sshd.ssh_config), "--dest", str(dest)]
    args += ["--remote-command", remote, "--remote-config", str(store.config), "--no-snapshots"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_a_folder_pulled_by_the_last_release_carries_over_when_both_sides_upgrade(
    sshd: SshServer, store: Store, release_0_3: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "results"
    run_release(release_0_3, store, frames=3)
    assert pull_with(release_0_3, sshd, store, dest, on_release(release_0_3)).returncode == 0
    folder = store.pulled(dest)
    held_views = (folder / "cells.csv").read_bytes()  # the last release kept views in cells.csv
    assert (folder / "tracks.csv").is_file()
    store.run(frames=3)  # today's metascope on the Pi: the database migrates to today's names
    result = pull(sshd, store, dest, "--no-snapshots")
    assert result.returncode == 0, result.stderr
    assert "renamed the files pulled before into today's names" in result.stdout
    assert not (folder / "tracks.csv").exists()
    for table in PULLED:
        assert read_csv(folder / f"{table}.csv") == store.rows(table), table
    assert (folder / "views.csv").read_bytes().startswith(held_views), "the rows held are kept, new ones appended"


def test_todays_pull_of_a_pi_on_the_last_release_lands_under_todays_names(
    sshd: SshServer, store: Store, release_0_3: Path, tmp_path: Path
) -> None:
    run_release(release_0_3, store, frames=3)
    result = pull(sshd, store, tmp_path / "results", "--no-snapshots", "--remote-command", on_release(release_0_3))
    assert result.returncode == 0, result.stderr
    folder = store.pulled(tmp_path / "results")
    for table in PULLED:  # today's export reads the Pi's older database under today's names
        exported = subprocess.run([sys.executable, "-m", "edge", "export", "--config", str(store.config), "--table",
                                   table], capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        assert read_csv(folder / f"{table}.csv") == list(csv.reader(io.StringIO(exported.stdout))), table
    assert len(read_csv(folder / "cells.csv")) > 1 and "frame_id" not in read_csv(folder / "cells.csv")[0]


def test_the_last_release_pulling_an_upgraded_pi_stops_instead_of_mixing_tables(
    sshd: SshServer, store: Store, release_0_3: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "results"
    run_release(release_0_3, store, frames=2)
    assert pull_with(release_0_3, sshd, store, dest, on_release(release_0_3)).returncode == 0
    held = snapshot_of(dest)
    store.run(frames=2)
    result = pull_with(release_0_3, sshd, store, dest, REMOTE_METASCOPE)
    assert result.returncode != 0 and "columns of cells changed" in result.stderr
    assert snapshot_of(dest) == held, "nothing pulled before was changed"


def test_a_folder_pulled_by_the_csv_only_pull_sh_carries_over_into_the_results_store(
    sshd: SshServer, store: Store, csv_only_pull: Path, tmp_path: Path
) -> None:
    """Folders pulled before results.sqlite (CSV files only, every pull rewriting them) carry
    over on the first pull: every row kept, the files appended to, and a message."""
    store.run(frames=2)
    dest = tmp_path / "results"
    assert pull_with(csv_only_pull, sshd, store, dest, REMOTE_METASCOPE).returncode == 0
    folder = store.pulled(dest)
    held = {table: (folder / f"{table}.csv").read_bytes() for table in ("cells", "views", "frames")}
    assert not (dest / ALIAS / "results.sqlite").exists()
    store.run(frames=2)
    result = pull(sshd, store, dest, "--no-snapshots")
    assert result.returncode == 0, result.stderr
    assert "carried the rows pulled before into scope-test/results.sqlite" in result.stdout
    for table in PULLED:
        assert read_csv(folder / f"{table}.csv") == store.rows(table), table
    for table, before in held.items():
        assert (folder / f"{table}.csv").read_bytes().startswith(before), f"{table}: the rows held were rewritten"
    again = pull(sshd, store, dest, "--no-snapshots")
    assert "views: no new rows" in again.stdout and "carried" not in again.stdout
    for table in PULLED:  # the store alone holds every row: the files can be written again from it
        (folder / f"{table}.csv").unlink()
    written = subprocess.run([sys.executable, str(REPO / "deploy" / "pull_merge.py"), "csv", str(dest / ALIAS)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert written.returncode == 0, written.stderr
    for table in PULLED:
        assert read_csv(folder / f"{table}.csv") == store.rows(table), table


def test_a_destination_starting_with_a_dash_is_a_folder(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    """Issue 18 F3, every deploy script: a relative --dest starting with '-' reached mkdir,
    mktemp, rsync and pull_merge.py as an option (rsync's -e runs a command)."""
    store.run(frames=2)
    dest = "-esh -c 'touch PWNED' x"
    args = ["bash", str(PULL), ALIAS, "-F", str(sshd.ssh_config), "--dest", dest]
    args += ["--remote-command", REMOTE_METASCOPE, "--remote-config", str(store.config)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert not (tmp_path / "PWNED").exists(), "a command named in --dest ran"
    assert result.returncode == 0, result.stderr
    pulled = store.pulled(tmp_path / dest)
    assert read_csv(pulled / "runs.csv") == store.rows("runs")
    assert {p.name for p in (pulled / "snapshots").iterdir()} == store.snapshots()
