"""The results store of one host: DEST/HOST/results.sqlite, the truth every pull appends to.

One SQLite file per host (standard library, nothing to install) keeps a host's folder whole: it
can be copied, backed up or handed over alone, the host's pull lock already serialises its
writers, and one damaged file never touches another rig's rows. Each results database the host
has had is a row of `databases`: its id (the Pi's random hex id), an epoch (bumped when that
database went back in time, a restored backup: its rows are kept apart, never mixed with the
ones pulled before) and the folder its CSVs, snapshots and crops live in. The tables pulled
(cells, views, frames, runs) hold every row once, keyed by (database, id), with the columns the
host sent as text, exactly as exported. `columns` keeps each database's header, so its CSV is
written with the columns in the host's order; `csv_written` what its CSV files already hold.

A pull opens it, reads a few indexed maxima, appends in one transaction: its cost follows the
rows that are new, not the rows held.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

from pull_errors import EXIT_PULL_TARGET_UNUSABLE, PullError

STORE_NAME = "results.sqlite"
LAYOUT = "metascope-pull/4"
TABLES = ("cells", "views", "frames", "runs")
BUSY_TIMEOUT_S = 120  # a report reading the store while a pull commits waits, it does not fail

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS databases (
    key INTEGER PRIMARY KEY,
    database_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    folder TEXT NOT NULL UNIQUE,
    first_pulled_at TEXT NOT NULL,
    last_pulled_at TEXT NOT NULL,
    note TEXT,
    UNIQUE (database_id, epoch)
);
CREATE TABLE IF NOT EXISTS columns (db INTEGER NOT NULL, tbl TEXT NOT NULL, names TEXT NOT NULL,
    PRIMARY KEY (db, tbl));
CREATE TABLE IF NOT EXISTS csv_written (db INTEGER NOT NULL, tbl TEXT NOT NULL, last_id INTEGER NOT NULL,
    bytes INTEGER NOT NULL, names TEXT NOT NULL, PRIMARY KEY (db, tbl));
"""


class Database(NamedTuple):
    key: int
    database_id: str
    epoch: int
    folder: str


class CsvState(NamedTuple):
    last_id: int
    size: int
    names: list[str]


class Store(Protocol):
    """What deciding where a pull goes and landing its rows needs of a store: ResultsStore here,
    PostgresStore (deploy/pull_postgres.py) for a facility's database."""

    def databases(self, database_id: str | None = None) -> list[Database]: ...
    def add_database(self, database_id: str, epoch: int, folder: str, note: str | None = None) -> int: ...
    def touch(self, key: int) -> None: ...
    def columns(self, key: int, table: str) -> list[str] | None: ...
    def widen(self, key: int, table: str, names: list[str]) -> list[str]: ...
    def last_id(self, key: int | None, table: str) -> int: ...
    def insert(
        self, key: int, table: str, names: list[str], rows: Iterable[list[str]], replace: bool = False
    ) -> int: ...
    def rows(self, key: int, table: str, names: list[str], after: int = 0) -> Iterator[list[str]]: ...


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ResultsStore:
    """DEST/HOST/results.sqlite, opened (made when missing)."""

    def __init__(self, host_dir: Path) -> None:
        self.path = host_dir / STORE_NAME
        self.existed = self.path.is_file()
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            layout = self._layout()
            if layout not in (None, LAYOUT):
                raise PullError(EXIT_PULL_TARGET_UNUSABLE, f"{self.path} is {layout}, newer than this pull.sh knows")
            if layout is None:
                with self.transaction():
                    for statement in _SCHEMA.split(";")[:-1]:  # executescript would commit half way
                        self.db.execute(statement)
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", (LAYOUT,))
        except sqlite3.Error as exc:
            raise PullError(
                EXIT_PULL_TARGET_UNUSABLE, f"{self.path}: not a results store this pull can use: {exc}"
            ) from None

    def _layout(self) -> str | None:
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return None
        row = self.db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: all of it lands, or none (BEGIN IMMEDIATE: no upgrade deadlock)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def databases(self, database_id: str | None = None) -> list[Database]:
        """Every database held (or those of one id), oldest epoch first."""
        where, params = ("WHERE database_id = ?", (database_id,)) if database_id is not None else ("", ())
        query = f"SELECT key, database_id, epoch, folder FROM databases {where} ORDER BY database_id, epoch"
        return [Database(*row) for row in self.db.execute(query, params)]

    def add_database(self, database_id: str, epoch: int, folder: str, note: str | None = None) -> int:
        stamp = now()
        cursor = self.db.execute(
            "INSERT INTO databases (database_id, epoch, folder, first_pulled_at, last_pulled_at, note)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (database_id, epoch, folder, stamp, stamp, note),
        )
        return int(cursor.lastrowid or 0)

    def touch(self, key: int) -> None:
        self.db.execute("UPDATE databases SET last_pulled_at = ? WHERE key = ?", (now(), key))

    def columns(self, key: int, table: str) -> list[str] | None:
        row = self.db.execute("SELECT names FROM columns WHERE db = ? AND tbl = ?", (key, table)).fetchone()
        return json.loads(row[0]) if row else None

    def widen(self, key: int, table: str, names: list[str]) -> list[str]:
        """Make room for ``names`` in TABLE and in this database's header; the columns it gained."""
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted(table)} (_db INTEGER NOT NULL, id INTEGER NOT NULL,"
            " PRIMARY KEY (_db, id)) WITHOUT ROWID"
        )
        have = {row[1] for row in self.db.execute(f"PRAGMA table_info({quoted(table)})")}
        for name in names:
            if name not in have:
                self.db.execute(f"ALTER TABLE {quoted(table)} ADD COLUMN {quoted(name)}")
        held = self.columns(key, table)
        gained = [name for name in names if held is not None and name not in held]
        header = [*(held or []), *(name for name in names if name not in (held or []))]
        self.db.execute("INSERT OR REPLACE INTO columns VALUES (?, ?, ?)", (key, table, json.dumps(header)))
        return gained

    def has_table(self, table: str) -> bool:
        return bool(
            self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        )

    def last_id(self, key: int | None, table: str) -> int:
        """The highest id held for one database (an index lookup, whatever is held)."""
        if key is None or not self.has_table(table):
            return 0
        row = self.db.execute(f"SELECT max(id) FROM {quoted(table)} WHERE _db = ?", (key,)).fetchone()
        return int(row[0] or 0)

    def insert(self, key: int, table: str, names: list[str], rows: Iterable[list[str]], replace: bool = False) -> int:
        """Add rows (values in the order of ``names``, id first); runs are replaced by id."""
        listed = ", ".join(quoted(name) for name in names)
        marks = ", ".join("?" * (len(names) + 1))
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        cursor = self.db.executemany(
            f"{verb} INTO {quoted(table)} (_db, {listed}) VALUES ({marks})",
            ([key, int(row[0]), *row[1:]] for row in rows),
        )
        return max(cursor.rowcount, 0)

    def rows(self, key: int, table: str, names: list[str], after: int = 0) -> Iterator[list[str]]:
        """One database's rows after id ``after``, as CSV text (NULL is an empty field), by id."""
        listed = ", ".join(quoted(name) for name in names)
        cursor = self.db.execute(
            f"SELECT {listed} FROM {quoted(table)} WHERE _db = ? AND id > ? ORDER BY id", (key, after)
        )
        for row in cursor:
            yield ["" if value is None else str(value) for value in row]
