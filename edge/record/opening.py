"""Opening the results database for writing, and what each way that can fail means. README,
Reliability, "The results database" has the same as a table:

- a full disk, a busy database (another process holds it), an I/O error, a file that cannot be
  opened just now: ``StoreError``; the service classifies without storing and tries again;
- a corrupt file (SQLite says CORRUPT or NOTADB, nothing else): renamed with its -wal, -shm and
  -journal to ``metascope.corrupt-<UTC time>.db`` beside it (never deleted) and a new database
  started in its place, which the caller says loudly;
- a database this metascope must not write: a newer schema, or any trigger, any view or a table
  outside its schema version's (a trigger runs inside the service with its rights: a planted
  one deleted every earlier frame, and ``trusted_schema`` off does not stop a plain DELETE):
  ``DatabaseRefused``, exit 11, each object named, read before anything is written, so the file
  is left as it was;
- a directory at the path, or a file that cannot be written (read-only): ``EnvironmentProblem``,
  exit 5.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

from edge.errors import DatabaseRefused, EnvironmentProblem, MetascopeError
from edge.record.reading import StoreError
from edge.record.retention import wal_limits
from edge.record.schema import SCHEMA_VERSION, migrate, tables_of_version, version_of

CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
# Tables SQLite makes itself when a person runs ANALYZE: statistics for the query planner, no code.
PLANNER_TABLES = frozenset({"sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4"})
# SQLite's own files beside a database: its write-ahead log, the log's index, a rollback journal.
COMPANIONS = ("-wal", "-shm", "-journal")
BUSY_TIMEOUT_S = 10.0


class SetAside(NamedTuple):
    """A corrupt database moved out of the way: where it went, and what SQLite said of it."""

    path: Path
    reason: str


def open_for_writing(path: Path, max_db_mb: float = 0.0) -> tuple[sqlite3.Connection, SetAside | None]:
    """A connection (isolation_level=None) on the database at ``path``, migrated to this
    schema, and where a corrupt file found there was moved (None when none was)."""
    if path.is_dir():
        raise EnvironmentProblem(f"{path}: a directory where the results database should be: remove or rename it")
    try:
        inspect(path)
        return _open(path, max_db_mb), None
    except sqlite3.Error as exc:
        if not is_corrupt(exc):
            raise failure(exc, path) from exc
        try:
            aside = SetAside(set_aside(path), str(exc))
        except OSError as move_error:
            raise EnvironmentProblem(f"{path}: corrupt ({exc}) and cannot be moved aside: {move_error}") from exc
    try:
        return _open(path, max_db_mb), aside
    except sqlite3.Error as exc:
        raise failure(exc, path) from exc


def inspect(path: Path) -> None:
    """Look at an existing database through a read-only connection before anything is written
    (WAL mode was once set on a newer database first): its schema version, and its schema read
    in full. A read-write connection would already change things: on closing, the last one
    checkpoints a write-ahead log into the file and deletes the log, which must go aside with a
    corrupt file. Raises sqlite3.Error (corrupt, busy...) or DatabaseRefused."""
    if not path.exists() or path.stat().st_size == 0:
        return  # a new database
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        version = version_of(db)
        refuse_newer(path, version)
        refuse_foreign_objects(db, path, version)  # reads the whole schema: a corrupt one says so here
    finally:
        db.close()


def refuse_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise DatabaseRefused(
            f"{path}: schema version {version} is newer than this metascope's ({SCHEMA_VERSION}): it was "
            "left as it is; upgrade metascope, or move the file away to start a new database"
        )


def refuse_foreign_objects(db: sqlite3.Connection, path: Path, version: int) -> None:
    """No metascope makes a trigger or a view, nor a table outside its schema version's."""
    known = tables_of_version(version) | PLANNER_TABLES
    rows = db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') ORDER BY rowid")
    foreign = [f"{kind} {name!r}" for kind, name in rows if kind != "table" or name not in known]
    if foreign:
        raise DatabaseRefused(
            f"{path}: holds {', '.join(foreign)}, which no metascope makes (schema version {version}: tables "
            f"{', '.join(sorted(known - PLANNER_TABLES))}, no triggers, no views); a trigger would run inside the "
            "service, so nothing was written: drop them (sqlite3 FILE 'DROP TRIGGER name' ...) or move the file away"
        )


def _open(path: Path, max_db_mb: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        version = version_of(db)  # again: another process may have changed it since inspect()
        refuse_newer(path, version)
        db.execute("PRAGMA trusted_schema=OFF")  # a second fence: no functions with side effects from the schema
        if version == 0:
            # Freed pages go back to the file system after retention (set before any table).
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The WAL is checkpointed and truncated within a share of the size cap (retention.py).
        autocheckpoint_pages, wal_limit_bytes = wal_limits(max_db_mb, db.execute("PRAGMA page_size").fetchone()[0])
        db.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint_pages}")
        db.execute(f"PRAGMA journal_size_limit={wal_limit_bytes}")
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def is_corrupt(exc: sqlite3.Error) -> bool:
    """SQLite's CORRUPT or NOTADB (extended codes included): nothing else counts as corrupt."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in CORRUPT_CODES


def failure(exc: sqlite3.Error, path: Path) -> MetascopeError:
    """What a failure other than corruption means: EnvironmentProblem where waiting cannot help
    (read-only), else StoreError (tried again: busy, full, an I/O error, cannot open now)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        unwritable = _unwritable(path)
        if unwritable or primary == sqlite3.SQLITE_READONLY:
            return EnvironmentProblem(
                f"{path}: the results database cannot be written ({unwritable or 'read-only'}: {exc}); "
                "make it and its folder writable by the service, or give another state_dir"
            )
    return StoreError(f"{path}: cannot open the results database: {exc}")


def _unwritable(path: Path) -> str | None:
    """Why the database or its folder (where SQLite makes its -wal and -shm) cannot be written."""
    for target in (path, path.parent):
        if target.exists() and not os.access(target, os.W_OK):
            read_only_fs = os.statvfs(target).f_flag & os.ST_RDONLY
            return f"{target} is read-only" + (" (a read-only file system)" if read_only_fs else "")
    return None


def set_aside_databases(path: Path) -> list[Path]:
    """The corrupt databases set aside beside ``path`` (``set_aside``'s names), oldest first."""
    return sorted(path.parent.glob(f"{path.stem}.corrupt-*{path.suffix}"))


def set_aside(path: Path) -> Path:
    """Rename the database and its companions to metascope.corrupt-<UTC time>.db (-wal...): kept
    for recovery (`sqlite3 FILE .recover`), and out of the way of a new database, which must not
    meet the old one's write-ahead log. The companions go first: a crash between two renames
    leaves the corrupt file where it was, to be set aside again, never a new database beside an
    old log."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}")
    number = 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in ("", *COMPANIONS)):
        number += 1
        aside = path.with_name(f"{path.stem}.corrupt-{stamp}-{number}{path.suffix}")
    for suffix in (*COMPANIONS, ""):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.rename(source, f"{aside}{suffix}")
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)  # the renames survive a power cut before the new database's first commit
    finally:
        os.close(directory)
    return aside
