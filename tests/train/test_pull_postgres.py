"""`deploy/pull.sh HOST --into postgresql://...` (issue 20.2, 20.3): a real sshd (tests/sshd_harness.py),
a Pi's results store filled by the real `metascope run`, and a real PostgreSQL server
(tests/postgres_harness.py) on a unix socket, never a mock. Here, not among the edge tests: the
lander runs with the project's virtualenv python (the postgres extra), as $METASCOPE_PYTHON."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postgres_harness import PostgresServer
from sshd_harness import ALIAS, SshServer
from test_deploy_pull import PULL, PULLED, REMOTE_METASCOPE, Store, pull

from edge.errors import ExitCode
from train.cli import main as metascope_train

pytestmark = pytest.mark.slow

_names = itertools.count()


@pytest.fixture
def store(tmp_path: Path, tiny_model) -> Store:
    return Store(tmp_path / "pi", Path(tiny_model[0]))


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    """A fresh database of the test server, its URL (the superuser owns it)."""
    return postgres.create_database(f"facility{os.getpid()}_{next(_names)}")


def pull_into(
    sshd: SshServer, store: Store, url: str, crops: Path | None, *extra: str, remote: str = REMOTE_METASCOPE
) -> subprocess.Popen[str]:
    """pull.sh --into URL, started (not waited for), with this python as $METASCOPE_PYTHON."""
    args = ["bash", str(PULL), ALIAS, "-F", str(sshd.ssh_config), "--into", url, "--remote-command", remote]
    args += ["--remote-config", str(store.config)]
    args += ["--crops-dir", str(crops)] if crops is not None else ["--no-snapshots", "--no-crops"]
    env = {**os.environ, "METASCOPE_PYTHON": sys.executable}
    return subprocess.Popen(
        args + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )  # fmt: skip


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def query(url: str, statement: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(statement).fetchall()  # type: ignore[arg-type]


def landed(postgres: PostgresServer, url: str, table: str, epoch: int = 1) -> list[list[str]]:
    """A table as the database holds it for the test rig's database and epoch: header and rows,
    in the columns' order the Pi exported, as `Store.rows` gives them."""
    import psycopg

    with psycopg.connect(url) as connection:
        found = connection.execute(
            "SELECT d.key, c.names FROM metascope.databases d JOIN metascope.columns c ON c.db = d.key"
            " WHERE d.host = %s AND d.epoch = %s AND c.tbl = %s",
            (ALIAS, epoch, table),
        ).fetchone()
        assert found is not None, f"no {table} landed for {ALIAS}, epoch {epoch}"
        key, names = found
        rows = connection.execute(f"SELECT id, fields FROM metascope.{table} WHERE db = %s ORDER BY id", (key,))
        return [names, *([str(row_id), *(fields.get(name, "") for name in names[1:])] for row_id, fields in rows)]


def test_a_pull_into_postgresql_lands_every_row_once_and_a_second_adds_nothing(
    sshd: SshServer, store: Store, postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    store.run(frames=4)
    crops = tmp_path / "crops"
    first = finished(pull_into(sshd, store, database, crops))
    assert first.returncode == 0, first.stderr
    assert database not in first.stdout, "the URL (it may hold a password) is not printed"
    for table in PULLED:
        assert landed(postgres, database, table) == store.rows(table), table
    assert query(database, "SELECT version FROM metascope.schema_version") == [(1,)], "the schema records its version"
    folder = crops / ALIAS / store.database_id()
    assert {p.name for p in (folder / "snapshots").iterdir()} == store.snapshots() != set()
    assert {p.name for p in (folder / "crops").iterdir()} == store.crops() != set()

    again = finished(pull_into(sshd, store, database, crops))
    assert again.returncode == 0, again.stderr
    assert "views: no new rows" in again.stdout and "cells: no new rows" in again.stdout
    for table in PULLED:
        assert landed(postgres, database, table) == store.rows(table), table

    store.run(frames=2)
    third = finished(pull_into(sshd, store, database, None))
    assert third.returncode == 0, third.stderr
    assert re.search(r"views: \d+ new rows", third.stdout)
    for table in PULLED:
        assert landed(postgres, database, table) == store.rows(table), table


def meeting_remote(tmp_path: Path, parties: int) -> str:
    """The real remote metascope, except that each export of views first waits (up to 60 s) until
    ``parties`` pulls are exporting views: the pulls have all read the same last id held."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    script = tmp_path / "meet.sh"
    script.write_text(
        f"""#!/bin/sh
case "$*" in
*"--table views"*)
    mktemp {meeting}/here.XXXXXX >/dev/null
    i=0
    while [ "$(ls {meeting} | wc -l)" -lt {parties} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done ;;
esac
exec {REMOTE_METASCOPE} "$@"
"""
    )
    script.chmod(0o755)
    return str(script)


def test_two_desktops_pulling_the_same_rig_at_once_land_each_row_once(
    sshd: SshServer, store: Store, postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """Two pulls that both asked for the rows after the same id land them at the same time: the
    transactions, not a lock on a file, keep each row once, and neither pull fails."""
    store.run(frames=4)
    remote = meeting_remote(tmp_path, parties=2)
    pulls = [pull_into(sshd, store, database, tmp_path / f"desk{n}", remote=remote) for n in (1, 2)]
    results = [finished(process) for process in pulls]
    for result in results:
        assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "meeting").iterdir())) == 2, "both pulls exported views"
    added = [int(m.group(1)) if (m := re.search(r"views: (\d+) new rows", r.stdout)) else 0 for r in results]
    assert sorted(added) == [0, len(store.rows("views")) - 1], "one pull added the views, the other found them held"
    for table in PULLED:
        assert landed(postgres, database, table) == store.rows(table), table
    assert query(database, "SELECT count(*) FROM metascope.databases") == [(1,)]


def test_a_restored_backup_lands_as_a_new_epoch(
    sshd: SshServer, store: Store, postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """F11 in PostgreSQL: a Pi whose database went back in time (a backup restored: its ids
    repeat) lands as epoch 2 of the same database id; epoch 1 stays as it was pulled."""
    store.run(frames=2)
    backup = tmp_path / "backup.db"
    with sqlite3.connect(store.state / "metascope.db") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    store.run(frames=2)
    assert finished(pull_into(sshd, store, database, None)).returncode == 0
    before = {table: landed(postgres, database, table) for table in PULLED}
    for name in ("metascope.db", "metascope.db-wal", "metascope.db-shm"):
        (store.state / name).unlink(missing_ok=True)
    shutil.copy(backup, store.state / "metascope.db")
    store.run(frames=3)
    result = finished(pull_into(sshd, store, database, None))
    assert result.returncode == 0, result.stderr
    assert "went back in time" in result.stdout and "epoch 2" in result.stdout
    for table in PULLED:
        assert landed(postgres, database, table, epoch=1) == before[table], table
        assert landed(postgres, database, table, epoch=2) == store.rows(table), table
    again = finished(pull_into(sshd, store, database, None))
    assert "views: no new rows" in again.stdout and "went back" not in again.stdout


def page_without_source(page: Path) -> str:
    """The page less the line naming where it was made from and when."""
    return re.sub(r"<p>From .*? by metascope-train", "<p>From SOURCE by metascope-train", page.read_text())


def test_the_report_from_postgresql_is_the_report_from_the_folder(
    sshd: SshServer, store: Store, database: str, tmp_path: Path
) -> None:
    """The same rig pulled into a folder and into PostgreSQL: `metascope-train report` makes the
    same page from both (runs, counts, figures and crops)."""
    store.run(frames=4)
    dest, crops = tmp_path / "results", tmp_path / "crops"
    assert pull(sshd, store, dest).returncode == 0
    assert finished(pull_into(sshd, store, database, crops)).returncode == 0
    from_folder, from_postgres = tmp_path / "folder.html", tmp_path / "postgres.html"
    assert metascope_train(["report", str(dest), "--out", str(from_folder)]) == 0
    assert metascope_train(["report", database, "--crops-dir", str(crops), "--out", str(from_postgres)]) == 0
    page = page_without_source(from_postgres)
    assert f"{len(store.rows('cells')) - 1}</td>" in page and "Crops shown: all" in page
    assert page == page_without_source(from_folder)


def test_without_a_usable_python_or_server_the_pull_says_so(
    sshd: SshServer, store: Store, postgres: PostgresServer, tmp_path: Path
) -> None:
    store.run(frames=1)
    args = ["bash", str(PULL), ALIAS, "-F", str(sshd.ssh_config), "--no-snapshots", "--no-crops"]
    args += ["--remote-command", REMOTE_METASCOPE, "--remote-config", str(store.config), "--into"]
    env = {key: value for key, value in os.environ.items() if key != "METASCOPE_PYTHON"}
    unset = subprocess.run([*args, postgres.url()], capture_output=True, text=True, env=env, timeout=60)
    assert unset.returncode == ExitCode.PULL_TARGET_UNUSABLE and "METASCOPE_PYTHON" in unset.stderr
    env["METASCOPE_PYTHON"] = "/usr/bin/python3"  # the system python: no psycopg
    if subprocess.run(["/usr/bin/python3", "-c", "import psycopg"], capture_output=True).returncode != 0:
        bare = subprocess.run([*args, postgres.url()], capture_output=True, text=True, env=env, timeout=60)
        assert bare.returncode == ExitCode.PULL_TARGET_UNUSABLE and "psycopg" in bare.stderr
    env["METASCOPE_PYTHON"] = sys.executable
    nowhere = postgres.url().replace(str(postgres.folder), str(tmp_path / "no-server"))
    refused = subprocess.run([*args, nowhere], capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == ExitCode.PULL_TARGET_UNUSABLE, refused.stderr
    assert "cannot use the PostgreSQL database" in refused.stderr and "Traceback" not in refused.stderr


def test_a_pull_that_waited_for_another_migrating_the_schema_finds_it_made(
    postgres: PostgresServer, database: str
) -> None:
    """Two first pulls at once: the second waits while the first makes the schema, then must find
    it made (not make it again and fail on the names the first took)."""
    import psycopg

    sys.path.insert(0, str(PULL.parent))
    try:
        from pull_postgres import MIGRATION_LOCK, MIGRATIONS
    finally:
        sys.path.remove(str(PULL.parent))
    env = {**os.environ, "METASCOPE_PYTHON": sys.executable}
    with psycopg.connect(database) as first:
        first.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        for statement in MIGRATIONS[1]:
            first.execute(statement)  # type: ignore[arg-type]
        first.execute("UPDATE metascope.schema_version SET version = 1")
        second = subprocess.Popen(
            [sys.executable, str(PULL.parent / "pull_postgres.py"), "migrate", database],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        for _ in range(600):
            if query(database, waiting) == [(1,)] or second.poll() is not None:
                break
            time.sleep(0.1)
        first.commit()
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "up to date" in out


# What README, Many rigs, tells a facility to grant the role its desktops pull as (the owner
# migrates the schema): read and add rows; refresh only runs, a database's last pull and a header;
# tables a later migration adds get the same reading and adding.
PULLING_ROLE_GRANTS = """
GRANT USAGE ON SCHEMA metascope TO {role};
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA metascope TO {role};
GRANT UPDATE ON metascope.runs, metascope.databases, metascope.columns TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA metascope GRANT SELECT, INSERT ON TABLES TO {role};
"""


def test_the_owner_migrates_and_a_pulling_role_with_the_readme_grants_pulls(
    sshd: SshServer, store: Store, postgres: PostgresServer
) -> None:
    suffix = f"{os.getpid()}_{next(_names)}"
    owner, puller, name = f"owner_{suffix}", f"puller_{suffix}", f"facility_{suffix}"
    for role in (owner, puller):
        postgres.sql(f'CREATE ROLE "{role}" LOGIN')
    postgres.create_database(name, owner=owner)
    as_owner, as_puller = postgres.url(name, owner), postgres.url(name, puller)
    store.run(frames=2)

    unmigrated = finished(pull_into(sshd, store, as_puller, None))
    assert unmigrated.returncode == ExitCode.PULL_TARGET_UNUSABLE
    assert "have the database's owner run" in unmigrated.stderr and "migrate" in unmigrated.stderr

    migrate = [sys.executable, str(PULL.parent / "pull_postgres.py"), "migrate", as_owner]
    migrated = subprocess.run(migrate, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    ungranted = finished(pull_into(sshd, store, as_puller, None))
    assert ungranted.returncode == ExitCode.PULL_TARGET_UNUSABLE and "permission denied" in ungranted.stderr

    for statement in PULLING_ROLE_GRANTS.format(role=f'"{puller}"').strip().splitlines():
        postgres.sql(statement, name, owner)
    granted = finished(pull_into(sshd, store, as_puller, None))
    assert granted.returncode == 0, granted.stderr
    store.run(frames=2)
    again = finished(pull_into(sshd, store, as_puller, None))
    assert again.returncode == 0, again.stderr
    for table in PULLED:
        assert landed(postgres, as_owner, table) == store.rows(table), table
    delete = "DELETE FROM metascope.views"
    denied = subprocess.run(
        [sys.executable, "-c", f"import psycopg; psycopg.connect({as_puller!r}).execute({delete!r})"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert denied.returncode != 0 and "permission denied" in denied.stderr, "the pulling role cannot delete rows"
    postgres.sql("CREATE TABLE metascope.added_later (id bigint)", name, owner)  # as a later migration would
    postgres.sql("INSERT INTO metascope.added_later VALUES (1)", name, puller)


def test_a_nul_character_in_an_export_is_a_bad_export_and_lands_nothing(
    sshd: SshServer, store: Store, postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """A field holding a NUL character (SQLite keeps it; PostgreSQL text cannot) is what the host
    sent, named as such (exit 9), not a database that cannot be used (12); nothing of it lands."""
    store.run(frames=2)
    assert finished(pull_into(sshd, store, database, None)).returncode == 0
    held = {table: landed(postgres, database, table) for table in PULLED}
    store.run(frames=2)
    liar = tmp_path / "nul.sh"
    liar.write_text(
        '#!/bin/sh\ncase "$*" in\n*"--table views"*) '
        f'{REMOTE_METASCOPE} "$@" | {sys.executable} -c '
        "'import sys; text = sys.stdin.read(); sys.stdout.write(text[:-1] + \"\\0\" + text[-1:])' ;;\n"
        f'*) exec {REMOTE_METASCOPE} "$@" ;;\nesac\n'
    )
    liar.chmod(0o755)
    result = finished(pull_into(sshd, store, database, None, remote=str(liar)))
    assert result.returncode == ExitCode.BAD_EXPORT, result.stderr
    assert "NUL" in result.stderr and "Traceback" not in result.stderr
    assert {table: landed(postgres, database, table) for table in PULLED} == held
    honest = finished(pull_into(sshd, store, database, None))
    assert honest.returncode == 0, honest.stderr
