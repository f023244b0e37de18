"""The CSV files of a host's folder, written from its results store: HOST_DIR/<folder>/<table>.csv
for every database held, what a spreadsheet or pandas opens.

Incremental: a file that is as this step last left it (same size, same columns) gets only the
rows after the last id it holds, appended. Anything else (a new file, new columns, a file someone
edited, truncated or removed, and runs, whose rows change as a run goes) is written whole under a
temporary name and renamed over the old one. The store is the truth: a CSV can always be
written again from it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pull_errors import EXIT_PULL_TARGET_UNUSABLE, PullError
from pull_store import TABLES, CsvState, Database, ResultsStore

REFRESHED = ("runs",)  # rewritten whole on every pull of their database (a few rows per run)


def csv_state(store: ResultsStore, key: int, table: str) -> CsvState | None:
    """What this step last left in one CSV file (its table csv_written, in the store)."""
    row = store.db.execute(
        "SELECT last_id, bytes, names FROM csv_written WHERE db = ? AND tbl = ?", (key, table)
    ).fetchone()
    return CsvState(row[0], row[1], json.loads(row[2])) if row else None


def set_csv_state(store: ResultsStore, key: int, table: str, state: CsvState) -> None:
    store.db.execute(
        "INSERT OR REPLACE INTO csv_written VALUES (?, ?, ?, ?, ?)",
        (key, table, state.last_id, state.size, json.dumps(state.names)),
    )


def write_rows(handle, rows: Iterable[list[str]], header: list[str] | None = None) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)


def rewrite(store: ResultsStore, database: Database, table: str, path: Path, names: list[str]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            write_rows(out, store.rows(database.key, table, names), names)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def append(store: ResultsStore, database: Database, table: str, path: Path, state: CsvState) -> None:
    with path.open("a", newline="", encoding="utf-8") as out:
        write_rows(out, store.rows(database.key, table, state.names, after=state.last_id))
        out.flush()
        os.fsync(out.fileno())


def write_table(store: ResultsStore, database: Database, table: str, refresh: bool) -> str | None:
    """Bring one CSV up to date; how, for the message (None: it already was)."""
    names = store.columns(database.key, table)
    if names is None:
        return None
    path = Path(store.path.parent, database.folder, f"{table}.csv")
    state = csv_state(store, database.key, table)
    last = store.last_id(database.key, table)
    size = path.stat().st_size if path.is_file() else -1
    if state is not None and state.names == names and state.size == size and not (refresh and table in REFRESHED):
        if state.last_id == last:
            return None
        append(store, database, table, path, state)
        how = "appended"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        rewrite(store, database, table, path, names)
        how = "written"
    set_csv_state(store, database.key, table, CsvState(last, path.stat().st_size, names))
    return how


def write_csvs(store: ResultsStore, refresh_key: int | None = None) -> list[str]:
    """Every database's CSVs (runs of the database ``refresh_key`` rewritten); the files changed."""
    changed = []
    for database in store.databases():
        for table in TABLES:
            try:
                how = write_table(store, database, table, database.key == refresh_key)
            except OSError as exc:
                raise PullError(
                    EXIT_PULL_TARGET_UNUSABLE, f"cannot write {database.folder}/{table}.csv: {exc}"
                ) from None
            if how:
                changed.append(f"{database.folder}/{table}.csv")
    return changed
