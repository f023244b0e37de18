"""Folders pulled by earlier versions of pull.sh, carried over on the first pull by this one.

Layout 1 (the first pull.sh): the CSVs straight in HOST_DIR. They are moved into the folder of
the database they came from when their runs match that database's, else into HOST_DIR/earlier/.
Layout 2 (before schema 6): views in cells.csv, cells in tracks.csv, older column names: renamed.
Layout 3 (CSV files only, HOST_DIR/<database id>/<table>.csv), or layout 4 whose results.sqlite
was lost: every folder's rows are imported into the results store, each folder as one database
(and epoch); its CSV files stay where they are, and later pulls append to them.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from pathlib import Path

from pull_csv import set_csv_state
from pull_errors import EXIT_PULL_TARGET_UNUSABLE, PullError
from pull_intake import Export, read_small, todays_columns
from pull_store import TABLES, CsvState, ResultsStore

FIRST_LAYOUT = ("cells", "frames", "runs")  # what the first layout held straight in HOST_DIR
EARLIER = "earlier"
EPOCH_FOLDER = re.compile(r"([0-9a-f]{1,64})\.epoch([0-9]{1,6})")  # pull_target.py names them so


def runs_match(held: Path, fresh_header: list[str], fresh: list[list[str]]) -> bool:
    """Whether runs pulled earlier are this database's: every held run the host still has
    started at the same moment on the same machine."""
    header, rows = read_small(held, "runs", str(held))

    def identity(columns: list[str], row: list[str]) -> tuple[str, ...]:
        return tuple(row[columns.index(name)] for name in ("started_at", "host") if name in columns)

    on_host = {row[0]: identity(fresh_header, row) for row in fresh}
    shared = [row for row in rows if row[0] in on_host]
    return bool(shared) and all(on_host[row[0]] == identity(header, row) for row in shared)


def migrate_first_layout(
    host_dir: Path, database_dir: Path, runs_header: list[str], fresh_runs: list[list[str]]
) -> str | None:
    """Move what the first layout left in HOST_DIR into its database's folder (or earlier/)."""
    old = [host_dir / f"{table}.csv" for table in FIRST_LAYOUT] + [host_dir / "snapshots"]
    if not any(path.exists() for path in old):
        return None
    runs = host_dir / "runs.csv"
    target = database_dir if runs.is_file() and runs_match(runs, runs_header, fresh_runs) else host_dir / EARLIER
    if target.exists():
        target = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=host_dir))
    target.mkdir(parents=True, exist_ok=True)
    for path in old:
        if path.exists():
            shutil.move(str(path), str(target / path.name))
    return target.name


def header_of(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PullError(EXIT_PULL_TARGET_UNUSABLE, f"{path}: not a readable CSV: {exc}") from None


def rewrite_header(path: Path, header: list[str]) -> None:
    """The same file with another first line (a temp file beside it, then a rename)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", newline="", encoding="utf-8") as out, path.open(newline="", encoding="utf-8") as old:
        old.readline()
        csv.writer(out, lineterminator="\n").writerow(header)
        shutil.copyfileobj(old, out)
    os.replace(temporary, path)


def held_folders(host_dir: Path) -> list[Path]:
    return sorted(path for path in host_dir.iterdir() if path.is_dir() and not path.name.startswith("."))


def rename_layout_2(host_dir: Path) -> list[str]:
    """Give the files of every database folder under HOST_DIR today's names: views in views.csv,
    cells in cells.csv, today's column names. Decided by each file's columns: a cells.csv with
    a frame_id column holds views. Returns the folders renamed."""
    renamed = []
    for folder in held_folders(host_dir):
        old_views, old_cells = folder / "cells.csv", folder / "tracks.csv"
        changed = False
        if old_views.is_file() and "frame_id" in header_of(old_views) and not (folder / "views.csv").exists():
            old_views.rename(folder / "views.csv")
            changed = True
        if old_cells.is_file() and not (folder / "cells.csv").exists():
            old_cells.rename(folder / "cells.csv")
            changed = True
        for table in ("frames", "runs"):
            path = folder / f"{table}.csv"
            if path.is_file() and todays_columns(table, header_of(path)) != header_of(path):
                rewrite_header(path, todays_columns(table, header_of(path)))
                changed = True
        if changed:
            renamed.append(folder.name)
    return renamed


def import_folder(store: ResultsStore, folder: Path) -> int:
    """One database folder's CSVs into the store (its name is the database's id, and its epoch
    after `.epoch` when a database went back in time: a folder of layout 4 whose store was lost);
    the files are recorded as written, so the next CSV step appends to them. Returns the rows."""
    named = EPOCH_FOLDER.fullmatch(folder.name)
    database_id, epoch = (named[1], int(named[2])) if named else (folder.name, 1)
    key = store.add_database(database_id, epoch, folder.name, note="imported from the CSV files of this folder")
    total = 0
    for table in TABLES:
        path = folder / f"{table}.csv"
        if not path.is_file():
            continue
        with Export(path, table, str(path), code=EXIT_PULL_TARGET_UNUSABLE) as export:
            store.widen(key, table, export.header)
            total += store.insert(key, table, export.header, export.rows)
        if header_of(path) == export.header:
            state = CsvState(store.last_id(key, table), path.stat().st_size, export.header)
            set_csv_state(store, key, table, state)
    return total


def import_layout_3(store: ResultsStore, host_dir: Path) -> list[str]:
    """Every database folder of HOST_DIR into the store, in one transaction; the folders."""
    folders = [
        folder for folder in held_folders(host_dir) if any((folder / f"{table}.csv").is_file() for table in TABLES)
    ]
    with store.transaction():
        for folder in folders:
            import_folder(store, folder)
    return [folder.name for folder in folders]
