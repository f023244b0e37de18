"""Reading what deploy/pull.sh writes: DEST/HOST/results.sqlite (every row pulled, read by
pulled_store.py) and DEST/HOST/<database id>/snapshots/ and crops/ (one folder per results
database a Pi has had), for one host or many; or a facility's PostgreSQL database
(pulled_postgres.py), its snapshots and crops in --crops-dir DIR/HOST/<database id>/. A folder
an older pull.sh wrote and no pull has carried over yet is read from its CSV files,
DEST/HOST/<database id>/{cells,views,frames,runs}.csv (views in cells.csv, cells in tracks.csv
before metascope 0.4: read under today's names).

read_pulled and read_pulled_postgres are the ways in, both through a StoreReader for stored
rows: what they cannot read (a file that is not a regular one inside the folder, a table without
the columns it needs, a bad row) they name and leave out, so a report is made from the rest.
Standard library only (psycopg for PostgreSQL); times stay the fixed-width ISO text the Pi
writes, turned into datetimes where a plot needs them.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import UsageError
from train.results.pulled_store import STORE_NAME, SqliteStore, StoreReader, StoreUnreadable
from train.results.tables import checked_rows, parse_time

__all__ = ["PulledDatabase", "PulledFolder", "PulledFolderError", "Unreadable", "number", "parse_time", "read_pulled",
           "read_pulled_postgres"]  # fmt: skip

TABLES = ("runs", "frames", "views", "cells")
FILES_BEFORE_LAYOUT_3 = {"views": "cells", "cells": "tracks"}  # what pull.sh called them before metascope 0.4


MAX_CROP_BYTES = 4 << 20  # a rig's crop is its model's window (tens of kB): anything far larger is not one


class PulledFolderError(UsageError):
    """RESULTS_DIR holds nothing a report can be made of; the message says what was looked for."""


class Unreadable(Exception):
    """A file of the pulled folder that was not read (the message says why): the page names it."""


def resolved_inside(root: Path, path: Path) -> Path:
    """``path`` with every link resolved, when that lies inside ``root``; else Unreadable."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
        raise Unreadable(f"cannot be opened ({getattr(exc, 'strerror', None) or exc})") from None
    if not real.is_relative_to(root.resolve()):
        raise Unreadable("a link out of the results folder: not read")
    return real


def not_a_file_inside(root: Path, path: Path) -> str | None:
    """Why ``path`` is not read as a regular file inside ``root``, or None: for a file another
    library opens by name (sqlite would wait for a FIFO's writer, and follow any link)."""
    try:
        mode = os.stat(resolved_inside(root, path), follow_symlinks=False).st_mode
    except Unreadable as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot be opened ({exc.strerror})"
    return None if stat.S_ISREG(mode) else "not a regular file: not read"


def read_inside(root: Path, path: Path, limit: int | None = None) -> bytes:
    """The bytes of ``path``, a regular file inside ``root``. A pulled folder may hold what
    someone else put there (a crop that is a link to /etc/shadow): a link that leads out of the
    folder is refused, the file is opened without following a link swapped in at its last step
    and without blocking on a FIFO, and a file over ``limit`` bytes is not read."""
    real = resolved_inside(root, path)
    try:
        descriptor = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Unreadable(f"cannot be opened ({exc.strerror})") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise Unreadable("not a regular file: not read")
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise Unreadable(f"larger than {limit / 2**20:.0f} MiB, which no crop of a rig is: not read")
    return data


@dataclass
class PulledDatabase:
    """One results database of one host, as pulled: its tables as lists of dicts (CSV text)."""

    host: str
    database_id: str
    folder: Path
    root: Path  # the results folder given: nothing outside it is read
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.database_id}"

    def rows(self, table: str) -> list[dict[str, str]]:
        return self.tables.get(table, [])

    def crop_path(self, track: dict[str, str]) -> Path | None:
        """The crop file of a cell, when its row names one and the pull brought it (a link counts:
        read_crop says why it is not read)."""
        name = track.get("crop") or ""
        path = self.folder / "crops" / name
        return path if name and "/" not in name and name not in (".", "..") and os.path.lexists(path) else None

    def read_crop(self, path: Path) -> bytes:
        """A crop's bytes (a file crop_path gave), raising Unreadable for anything but a regular
        file inside the results folder of at most MAX_CROP_BYTES."""
        return read_inside(self.root, path, MAX_CROP_BYTES)

    def thresholds(self) -> dict[str, float]:
        """Each run's decision threshold (0.5 where the run row has none)."""
        return {run["id"]: number(run.get("threshold"), 0.5) for run in self.rows("runs")}


def number(text: str | None, default: float = float("nan")) -> float:
    """A number from a CSV field; ``default`` for an empty field, one that is no number, or inf."""
    try:
        value = float(text) if text not in (None, "") else default
    except ValueError:
        return default
    return value if math.isfinite(value) or math.isnan(value) else default


@dataclass
class PulledFolder:
    databases: list[PulledDatabase]
    not_read: list[str]  # each file or row left out, with why (the page and stderr name them)


def read_table(database: PulledDatabase, path: Path, table: str, not_read: list[str]) -> None:
    """``path``'s checked rows into ``database.tables[table]``; what cannot be read into ``not_read``."""
    name = str(path.relative_to(database.root))
    try:
        text = read_inside(database.root, path).decode("utf-8-sig")  # -sig: a byte-order mark is read past
        database.tables[table], problems = checked_rows(name, text, table)
    except Unreadable as exc:
        problems = [f"{name}: {exc}"]
    except (UnicodeDecodeError, csv.Error) as exc:
        problems = [f"{name}: not a readable CSV ({exc}): not read"]
    not_read.extend(problems)


def stored_table(
    database: PulledDatabase, where: str, table: str, names: list[str], rows: list[list[str]]
) -> list[str]:
    """A table read from a results store into ``database.tables``, through the same checks as a
    CSV file's rows (a Pi's export may hold anything: the store keeps rows as sent)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([names, *rows])
    database.tables[table], problems = checked_rows(
        f"{where} ({database.database_id}, {table})", text.getvalue(), table
    )
    return problems


def from_store(
    store: StoreReader, root: Path, folders: Path, not_read: list[str], only: str | None = None
) -> list[PulledDatabase]:
    """The databases ``store`` holds (only the one named ``only`` when given), each with its folder
    of snapshots and crops at FOLDERS/HOST/<folder>, read inside ROOT; what cannot be read into ``not_read``."""
    found = []
    try:
        for stored in store.databases(TABLES):
            if only not in (None, stored.folder):
                continue
            folder = folders / stored.host / stored.folder
            database = PulledDatabase(stored.host, stored.folder, folder, root=root)
            for table, (names, rows) in stored.tables.items():
                not_read.extend(stored_table(database, store.where, table, names, rows))
            found.append(database)
    except StoreUnreadable as exc:
        not_read.append(str(exc))
    return found


def from_stores(results_dir: Path, not_read: list[str]) -> tuple[list[PulledDatabase], set[Path]]:
    """The databases of every results store at, under (one level) or just above RESULTS_DIR (a
    database's folder: that database only), and the host folders the stores cover."""
    stores = sorted({*results_dir.glob(STORE_NAME), *results_dir.glob(f"*/{STORE_NAME}")})
    only = None
    if not stores and (results_dir.parent / STORE_NAME).is_file():
        stores, only = [results_dir.parent / STORE_NAME], results_dir.name
    found, refused = [], set()
    for store in stores:
        if (problem := not_a_file_inside(results_dir, store)) is not None:
            not_read.append(f"{store.relative_to(results_dir)}: {problem} (its host's CSV files are read instead)")
            refused.add(store)
            continue
        found += from_store(SqliteStore(store), results_dir, store.parent.parent, not_read, only)
    return found, {store.parent for store in stores if store not in refused}


def read_pulled_postgres(url: str, crops_dir: Path | None) -> PulledFolder:
    """Every database a facility's PostgreSQL database holds, its snapshots and crops read from
    CROPS_DIR/HOST/<database id>/ (none without one), sorted by host and id."""
    from train.results.pulled_postgres import PostgresStore

    store = PostgresStore(url)
    not_read: list[str] = []
    # Without a crops folder no crop is looked for anywhere: nothing lies under /dev/null.
    root = crops_dir if crops_dir is not None else Path(os.devnull)
    found = from_store(store, root, root, not_read)
    if not found:
        raise PulledFolderError("; ".join(not_read) or f"{store.where}: no pulled results in this database")
    return PulledFolder(sorted(found, key=lambda database: (database.host, database.database_id)), not_read)


def read_pulled(results_dir: Path) -> PulledFolder:
    """Every pulled database under RESULTS_DIR (a --dest folder, one host's folder, or one
    database's folder), sorted by host and id, and what could not be read: from the hosts'
    results stores, and from the CSV files of folders no pull has carried over into one yet.
    Work folders of a pull under way (.pull.*) are skipped."""
    not_read: list[str] = []
    found, covered = from_stores(results_dir, not_read)
    for runs in sorted(results_dir.rglob("runs.csv")):
        folder = runs.parent
        relative = folder.relative_to(results_dir).parts
        if any(part.startswith(".") for part in relative) or covered & {folder, folder.parent}:
            continue
        # pull.sh's layout: HOST/<database id>/; a folder handed over alone is named by itself
        host = folder.parent.name if (folder.parent / "LAYOUT").is_file() else folder.name
        database = PulledDatabase(host=host, database_id=folder.name, folder=folder, root=results_dir)
        files = FILES_BEFORE_LAYOUT_3 if (folder / "tracks.csv").is_file() else {}
        for table in TABLES:
            path = folder / f"{files.get(table, table)}.csv"
            if os.path.lexists(path):
                read_table(database, path, table, not_read)
        found.append(database)
    if not found:
        raise PulledFolderError(
            f"{results_dir}: no pulled results here (looked for HOST/{STORE_NAME} and HOST/<database id>/runs.csv, "
            f"as `deploy/pull.sh HOST --dest {results_dir}` writes them)"
        )
    return PulledFolder(sorted(found, key=lambda database: (database.host, database.database_id)), not_read)
