"""A real PostgreSQL server for the tests, run from Debian's `postgresql` package in a temp folder.

initdb and pg_ctl are not on PATH (/usr/lib/postgresql/<version>/bin) and refuse to run as root,
which CI is: as root, the server is made and run as the `postgres` user (runuser) in a folder that
user owns. It listens on a unix socket in that folder only (listen_addresses ''), never on TCP,
and trusts local connections: it is reached as postgresql://USER@/DB?host=FOLDER&port=PORT. No
system cluster or configuration is read or changed.

Where it cannot start the tests skip with the reason; under CI (METASCOPE_CI=1) they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

SUPERUSER = "postgres"  # initdb's superuser, in the cluster only
SERVICE_USER = "postgres"  # the system user the server runs as when the tests run as root
PORT = 5433  # names the socket file (.s.PGSQL.5433); no TCP port is opened


def unavailable(reason: str) -> None:
    """Skip with ``reason``, except under CI, where a server that cannot start is a failure."""
    if os.environ.get("METASCOPE_CI") == "1":
        pytest.fail(f"CI must run the PostgreSQL tests, but {reason}")
    pytest.skip(reason)


def server_binaries() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/N/bin), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


@dataclass(frozen=True)
class PostgresServer:
    folder: Path  # the socket's folder (and the data folder's parent)
    port: int

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL of the local socket, as a facility's cron line would give one."""
        return f"postgresql://{quote(user)}@/{quote(database)}?host={quote(str(self.folder))}&port={self.port}"

    def sql(self, statement: str, database: str = "postgres", user: str = SUPERUSER) -> list[tuple]:
        """One statement as ``user`` (autocommit), its rows (empty for a statement without)."""
        import psycopg

        with psycopg.connect(self.url(database, user), autocommit=True) as connection:
            cursor = connection.execute(statement)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str, owner: str = SUPERUSER) -> str:
        """A fresh database owned by ``owner``; its URL as that owner."""
        self.sql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name, owner)


def _as_service_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    binaries = server_binaries()
    if binaries is None:
        unavailable("PostgreSQL's server is not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("runuser is missing: the server cannot be run as the postgres user")
    # Not under pytest's tmp folder: that is private to the user running the tests (0700), and
    # the server runs as another one. The socket path must also stay under 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="metascope-pg-"))
    try:
        if os.geteuid() == 0:
            try:
                shutil.chown(folder, SERVICE_USER, SERVICE_USER)
            except (LookupError, OSError) as exc:
                unavailable(f"cannot hand {folder} to the {SERVICE_USER} user: {exc}")
        data, log = folder / "data", folder / "server.log"
        made = subprocess.run(
            _as_service_user([str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                              "--locale=C.UTF-8", "--no-sync"]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if made.returncode != 0:
            unavailable(f"initdb failed: {made.stderr.strip()[-400:]}")
        options = f"-c listen_addresses='' -c unix_socket_directories='{folder}' -p {PORT} -c fsync=off"
        started = subprocess.run(
            _as_service_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if started.returncode != 0:
            unavailable(f"the server did not start: {started.stderr.strip()[-300:]} {_tail(log)}")
        try:
            yield PostgresServer(folder, PORT)
        finally:
            subprocess.run(
                _as_service_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True, timeout=120,
            )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-400:]
    except OSError:
        return ""
