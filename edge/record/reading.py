"""Reading the results database without ever changing it: `status`, `export` and `doctor`.

Standard library only, so the commands that read stay light. A database the service has not
opened since an upgrade still has an older schema (the service migrates at its next start): its
tables and columns are read under today's names, so `export --table views` means the same rows
on every Pi.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edge.errors import CommandError
from edge.record.schema import COLUMNS_BEFORE_V6, NAMES_BEFORE_V6, TABLES, version_of

# The column each table's --since/--until compare: cells by when they were last seen.
TIME_COLUMN = {"runs": "started_at", "frames": "captured_at", "views": "captured_at", "cells": "last_seen_at"}
REQUIRED_TABLES = ("runs", "frames", "views")  # a database no metascope 0.2 has opened yet has no cells


class StoreError(CommandError):
    """The database cannot be opened or read; the message names the file."""


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open the database for reading without ever creating or changing it."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no results database (has `metascope run` run with this state_dir?)")
    uri = path.resolve().as_uri()
    try:
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=10.0)
            stored = stored_tables(db)
        except sqlite3.OperationalError:
            # A WAL database whose writer has closed cleanly has no -wal/-shm files, and a
            # reader who may not create them (another user than the service's, e.g. over ssh)
            # cannot open it read-only. With no -wal there is nothing unmerged and no writer:
            # the file can be read as immutable.
            if Path(f"{path}-wal").exists():
                raise
            db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=10.0)
            stored = stored_tables(db)
        missing = [table for table in REQUIRED_TABLES if stored_name(db, table) not in stored]
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the results database: {exc}") from exc
    if missing:
        db.close()
        raise StoreError(f"{path}: not a metascope results database (no {', '.join(missing)} table)")
    return db


def stored_tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def stored_name(db: sqlite3.Connection, table: str) -> str:
    """What today's ``table`` is called in this database (its schema may predate the renames)."""
    return NAMES_BEFORE_V6.get(table, table) if version_of(db) < 6 else table


def has_table(db: sqlite3.Connection, table: str) -> bool:
    """Whether this database holds today's ``table`` (one made before metascope 0.2 has no cells)."""
    return stored_name(db, table) in stored_tables(db)


def results_tables(db: sqlite3.Connection) -> list[str]:
    """Today's names of the results tables this database holds."""
    return [table for table in TABLES if has_table(db, table)]


def _today(db: sqlite3.Connection) -> str:
    """A WITH clause that shows an older database's tables and columns under today's names ("" for
    a database that has them): a query written once reads every schema. ``main.x`` names the
    stored table itself, past a common table expression of the same name."""
    if version_of(db) >= 6:
        return ""
    parts = []
    for table in results_tables(db):
        stored = stored_name(db, table)
        before = {old: new for new, old in COLUMNS_BEFORE_V6.get(table, {}).items()}
        columns = [row[1] for row in db.execute(f'PRAGMA table_info("{stored}")')]
        listed = ", ".join(f'"{name}" AS "{before[name]}"' if name in before else f'"{name}"' for name in columns)
        parts.append(f'"{table}" AS (SELECT {listed} FROM main."{stored}")')
    return "WITH " + ", ".join(parts) + " "


def execute(db: sqlite3.Connection, query: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    """Run a read-only ``query`` written with today's table and column names."""
    return db.execute(_today(db) + query, params)


def select_rows(
    db: sqlite3.Connection,
    table: str,
    since: str | None = None,
    until: str | None = None,
    after_id: int | None = None,
) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Column names (today's) and a row iterator for one table, ordered by id (one read snapshot)."""
    if table not in TIME_COLUMN:
        raise ValueError(f"unknown table {table!r}")
    clauses, params = [], []
    if after_id is not None:
        clauses.append("id > ?")
        params.append(after_id)
    if since is not None:
        clauses.append(f"{TIME_COLUMN[table]} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{TIME_COLUMN[table]} < ?")
        params.append(until)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = execute(db, f'SELECT * FROM "{table}"{where} ORDER BY id', params)
    columns = [description[0] for description in cursor.description]
    return columns, iter(cursor)
