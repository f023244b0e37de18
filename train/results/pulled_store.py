"""Reading a host's results store, DEST/HOST/results.sqlite, as deploy/pull.sh (layout 4) writes
it (deploy/pull_store.py has the schema): each database it holds, with its tables as CSV text,
the same rows its CSV files hold. Read-only: a report never changes what was pulled.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

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


def _table(db: sqlite3.Connection, key: int, table: str) -> Table | None:
    row = db.execute("SELECT names FROM columns WHERE db = ? AND tbl = ?", (key, table)).fetchone()
    if row is None:
        return None
    names = json.loads(row[0])
    listed = ", ".join('"' + name.replace('"', '""') + '"' for name in names)
    cursor = db.execute(f'SELECT {listed} FROM "{table}" WHERE _db = ? ORDER BY id', (key,))
    return names, [["" if value is None else str(value) for value in values] for values in cursor]


def read_store(path: Path, tables: tuple[str, ...]) -> Iterator[tuple[str, Path, dict[str, Table]]]:
    """For each database in the store: its folder's name, the folder, and the tables it holds."""
    try:
        db = _open(path)
        try:
            held = db.execute("SELECT key, folder FROM databases ORDER BY database_id, epoch").fetchall()
            for key, folder in held:
                found = {table: _table(db, key, table) for table in tables}
                yield folder, path.parent / folder, {table: held for table, held in found.items() if held is not None}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreUnreadable(f"{path}: cannot read the results store: {exc}") from None
