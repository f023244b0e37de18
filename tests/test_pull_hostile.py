"""deploy/pull.sh against a Pi that sends what no metascope sends, or never answers (issue 18:
F10, F11, F26, F27, F29, F30): each test is the attack, through pull.sh and a real sshd, on the
layout of the results store. A host that lies changes nothing here and says what was wrong."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from sshd_harness import ALIAS, SshServer
from test_deploy_pull import PULLED, REMOTE_METASCOPE, Store, pull, read_csv, snapshot_of

from edge.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path: Path, tiny_model) -> Store:
    return Store(tmp_path / "pi", Path(tiny_model[0]))


def remote_that(tmp_path: Path, cases: str) -> str:
    """A remote metascope that answers some commands its own way (shell `case` arms on its
    arguments) and runs the real one for the rest."""
    script = tmp_path / "liar.sh"
    script.write_text(f'#!/bin/sh\ncase "$*" in\n{cases}\n*) exec {REMOTE_METASCOPE} "$@" ;;\nesac\n')
    script.chmod(0o755)
    return str(script)


def pulled_once(sshd: SshServer, store: Store, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder holding one good pull, and its every byte, for the attack to leave alone."""
    store.run(frames=2)
    dest = tmp_path / "results"
    first = pull(sshd, store, dest, "--no-snapshots")
    assert first.returncode == 0, first.stderr
    store.run(frames=2)  # new rows are waiting: a pull that went wrong would have something to write
    return dest, snapshot_of(dest)


def test_a_database_id_that_is_not_hex_is_refused(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    """F29: the database id names a folder: CURRENT or LAYOUT broke every later pull of the host,
    and `earlier` merged the rows into the folder set aside for another database's."""
    dest, held = pulled_once(sshd, store, tmp_path)
    for database_id in ("CURRENT", "LAYOUT", "earlier", "../up", "0123456789ABCDEF"):
        replace = f's|"database_id": "[0-9a-f]*"|"database_id": "{database_id}"|'
        liar = remote_that(tmp_path, f"status*) {REMOTE_METASCOPE} \"$@\" | sed '{replace}' ;;")
        result = pull(sshd, store, dest, "--no-snapshots", "--remote-command", liar)
        assert result.returncode == ExitCode.BAD_EXPORT, (database_id, result.stderr)
        assert f"database id {database_id!r} is not" in result.stderr and "Traceback" not in result.stderr
        assert snapshot_of(dest) == held, database_id
    assert pull(sshd, store, dest, "--no-snapshots").returncode == 0, "the next honest pull works"


@pytest.mark.parametrize(
    ("defect", "bad_id"),
    [
        ("F26", "\N{SUPERSCRIPT TWO}"),  # str.isdigit() says yes, int() says no
        ("F10", str(2**63 - 1)),  # the largest SQLite id: nothing comes after it
    ],
)
def test_an_id_no_pi_makes_changes_nothing(
    defect: str, bad_id: str, sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    """F26: a Unicode digit as an id crashed the merge with a traceback. F10: an id of 2**63-1 was
    kept, and every later pull asked for the rows after it and found none. The bad id comes as one
    more row after the Pi's real new views."""
    dest, held = pulled_once(sshd, store, tmp_path)
    one_more = f"tail -n 1 \"$0.out\" | sed 's/^[0-9]*,/{bad_id},/'"
    liar = remote_that(
        tmp_path, f'export*"--table views"*) {REMOTE_METASCOPE} "$@" >"$0.out"; cat "$0.out"; {one_more} ;;'
    )
    result = pull(sshd, store, dest, "--no-snapshots", "--remote-command", liar)
    assert result.returncode == ExitCode.BAD_EXPORT, result.stderr
    assert "is not a row id" in result.stderr and "Traceback" not in result.stderr
    assert snapshot_of(dest) == held
    honest = pull(sshd, store, dest, "--no-snapshots")
    assert honest.returncode == 0 and "views: no new rows" not in honest.stdout, "the next pull gets the new rows"


def test_a_dest_with_a_tab_is_used_and_one_with_a_newline_is_named(
    sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    """F27: `--dest` with a tab ended in a traceback. A tab is a legal character in a folder name:
    the pull lands there. A newline cannot pass through pull.sh's line-based work files: it is
    refused by name, before anything is made."""
    store.run(frames=1)
    tabbed = tmp_path / "with\ttab" / "results"
    result = pull(sshd, store, tabbed, "--no-snapshots")
    assert result.returncode == 0, result.stderr
    for table in PULLED:
        assert read_csv(store.pulled(tabbed) / f"{table}.csv") == store.rows(table), table
    result = pull(sshd, store, tmp_path / "with\nnewline" / "results")
    assert result.returncode == ExitCode.PULL_TARGET_UNUSABLE, result.stderr
    assert "--dest" in result.stderr and "newline" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "with\nnewline").exists(), "nothing made"


def test_a_remote_step_that_never_ends_is_bounded_and_the_next_pull_runs(
    sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    """F30: an export that never ends hung pull.sh, and every later pull (cron) failed on its lock.
    Each remote step is bounded (--timeout), on both sides: nothing is left running on the Pi."""
    dest, held = pulled_once(sshd, store, tmp_path)
    liar = remote_that(tmp_path, 'export*"--table views"*) exec sleep 313 ;;')
    started = time.monotonic()
    hung = pull(sshd, store, dest, "--no-snapshots", "--remote-command", liar, "--timeout", "5")
    assert time.monotonic() - started < 60
    assert hung.returncode == ExitCode.BAD_EXPORT, hung.stderr
    assert "took longer than 5 s" in hung.stderr and "--timeout" in hung.stderr
    assert snapshot_of(dest) == held
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", "sleep 313"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the export is still running on the host"
        time.sleep(0.5)
    honest = pull(sshd, store, dest, "--no-snapshots")
    assert honest.returncode == 0, honest.stderr


def restore_a_backup_and_pull(sshd: SshServer, store: Store, tmp_path: Path):
    """Pull runs 1 and 2, put back a backup taken after run 1, run again (another run 2, under
    ids already pulled), pull: the folder, the first database's folder, its bytes before, the pull."""
    store.run(frames=2)
    backup = tmp_path / "backup.db"
    with sqlite3.connect(store.state / "metascope.db") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    store.run(frames=2)
    dest = tmp_path / "results"
    assert pull(sshd, store, dest, "--no-snapshots").returncode == 0
    old = store.pulled(dest)
    held = snapshot_of(old)
    for name in ("metascope.db", "metascope.db-wal", "metascope.db-shm"):
        (store.state / name).unlink(missing_ok=True)
    shutil.copy(backup, store.state / "metascope.db")
    store.run(frames=3)
    assert store.rows("runs")[2][1] != read_csv(old / "runs.csv")[2][1], "the two runs 2 started apart"
    return dest, old, held, pull(sshd, store, dest, "--no-snapshots")


def test_a_database_restored_from_a_backup_is_kept_apart_as_a_new_epoch(
    sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    """F11: a backup of the same database restored on the Pi repeats ids: the second run 2
    overwrote the pulled run 2, and its rows, under ids already held, were never pulled. A
    database whose runs no longer match what was pulled went back in time: both are kept."""
    dest, old, held, result = restore_a_backup_and_pull(sshd, store, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "went back in time" in result.stdout
    assert snapshot_of(old) == held, "what was pulled before is kept as it was"
    restored = old.parent / f"{old.name}.epoch2"
    for table in PULLED:
        assert read_csv(restored / f"{table}.csv") == store.rows(table), table
    assert (dest / ALIAS / "CURRENT").read_text().strip() == restored.name
    again = pull(sshd, store, dest, "--no-snapshots")
    assert "views: no new rows" in again.stdout and "went back" not in again.stdout


def test_a_lost_results_store_is_made_again_from_the_csv_files_epochs_too(
    sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    """results.sqlite deleted (or lost with a disk): the next pull carries the CSV files over
    again, each folder as the database and epoch its name says, and goes on where they end."""
    dest, _, _, restored_pull = restore_a_backup_and_pull(sshd, store, tmp_path)
    assert restored_pull.returncode == 0, restored_pull.stderr
    (dest / ALIAS / "results.sqlite").unlink()
    store.run(frames=2)
    result = pull(sshd, store, dest, "--no-snapshots")
    assert result.returncode == 0, result.stderr
    assert "carried the rows pulled before into" in result.stdout and "went back" not in result.stdout
    restored = store.pulled(dest).parent / f"{store.database_id()}.epoch2"
    assert (dest / ALIAS / "CURRENT").read_text().strip() == restored.name
    for table in PULLED:
        assert read_csv(restored / f"{table}.csv") == store.rows(table), table
