"""The one way a report reads a results store: a StoreReader gives each database it holds (host,
folder name, tables as CSV text, the same rows a pulled folder's CSV files hold). Two of them:
SqliteStore, a host's DEST/HOST/results.sqlite as deploy/pull.sh (layout 4) writes it
(deploy/pull_store.py has the schema), and PostgresStore (pulled_postgres.py), a facility's
database that `pull.sh --into postgresql://...` fills. Read-only: a report never changes what
was pulled.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

STORE_NAME = "results.sqlite"
LAYOUT = "metascope-pull/4"


class StoreUnreadable(Exception):
    """The store cannot be read as layout 4 (the message names the file and why)."""


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=120)
    row = db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
    if not row or row[0] != LAYOUT:
        db.close()
        raise StoreUnreadable(f"{path}: not a results store of {LAYOUT} (found {row[0] if row else 'none'})")
    return db


Table = tuple[list[str], list[list[str]]]  # a table's columns and its rows as text, by id


class StoredDatabase(NamedTuple):
    """One results database a store holds: its host, its folder's name (<database id>, or
    <database id>.epochN for a database that went back in time) and the tables it holds."""

    host: str
    folder: str
    tables: dict[str, Table]


class StoreReader(Protocol):
    where: str  # how messages name the store (never a password)

    def databases(self, tables: tuple[str, ...]) -> Iterator[StoredDatabase]:
        """Each database held, by host, id and epoch; StoreUnreadable when the store cannot be read."""
        ...


def _table(db: sqlite3.Connection, key: int, table: str) -> Table | None:
    row = db.execute("SELECT names FROM columns WHERE db = ? AND tbl = ?", (key, table)).fetchone()
    if row is None:
        return None
    names = json.loads(row[0])
    listed = ", ".join('"' + name.replace('"', '""') + '"' for name in names)
    cursor = db.execute(f'SELECT {listed} FROM "{table}" WHERE _db = ? ORDER BY id', (key,))
    return names, [["" if value is None else str(value) for value in values] for values in cursor]


class SqliteStore:
    """DEST/HOST/results.sqlite: one host's databases."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"{path.parent.name}/{STORE_NAME}"

    def databases(self, tables: tuple[str, ...]) -> Iterator[StoredDatabase]:
        try:
            db = _open(self.path)
            try:
                held = db.execute("SELECT key, folder FROM databases ORDER BY database_id, epoch").fetchall()
                for key, folder in held:
                    found = {table: _table(db, key, table) for table in tables}
                    kept = {table: rows for table, rows in found.items() if rows is not None}
                    yield StoredDatabase(self.path.parent.name, folder, kept)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreUnreadable(f"{self.path}: cannot read the results store: {exc}") from None
