#!/usr/bin/env python3
"""The desktop half of deploy/pull.sh: where a pull's rows go, and merging them in safely.

Standard library only (the desktop needs no metascope install). pull.sh fetches, this decides:

    prepare HOST_DIR STATUS_JSON RUNS_CSV ANSWER  -> ANSWER: DATABASE_DIR on the first line, then one line
                                             per table to export: LOCAL_NAME, the host's name for it
                                             and the last id held, tab-separated
    merge DATABASE_DIR WORK_DIR LABEL        -> merges WORK_DIR/{cells,views,frames,runs}.csv in
    field STATUS_JSON KEY...                 -> prints one value of `metascope status --json`

Layout (version 3): HOST_DIR/LAYOUT names the version; HOST_DIR/<database id>/ holds one
results database's cells.csv (one row per cell), views.csv (one row per model call on a cell),
frames.csv, runs.csv, snapshots/ and crops/. Every database a Pi makes
(at first start, and again after a re-flash, a reinstall or `rm metascope.db`) has a random
id, so rows that share ids but belong to different databases are never mixed. HOST_DIR/CURRENT
names the folder the latest pull wrote. A folder pulled by the first layout (the CSVs straight
in HOST_DIR) is moved, on the first pull, into the folder of the database it came from when its
runs match that database's, else into HOST_DIR/earlier/. Files pulled under the names before
schema 6 (layout 2: views in cells.csv, cells in tracks.csv) are renamed on the first pull, and
rows from a host that still uses those names arrive under today's.

Exit status (edge/errors.py ExitCode): 0 done; 9 what the host sent is not usable (named;
nothing written); 1 a local file problem.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

LAYOUT = "metascope-pull/3"
# Pulled in this order: a cell is committed together with or after its views, a view with or
# after its frame, and a frame after its run, so every row pulled has its views, frame and run in
# the same or an earlier pull (runs, replaced as a whole, come last).
TABLES = ("cells", "views", "frames", "runs")
APPENDED = ("cells", "views", "frames")  # runs are replaced: a run's end and totals change as it goes
FIRST_LAYOUT = ("cells", "frames", "runs")  # what the first layout held straight in HOST_DIR
# Before schema 6 (metascope 0.3) the tables views and cells were called cells and tracks, and
# some columns had other names; a host tells its schema version in `status --json`.
RENAMED_IN_6 = 6
TABLES_BEFORE_6 = {"views": "cells", "cells": "tracks"}
COLUMNS_BEFORE_6 = {"frames": {"cells": "detections"}, "runs": {"cells": "views", "tracks": "cells"}}
NAMED_TODAY = {"frames": "detections", "runs": "views"}  # a header with this column has today's names
UNIDENTIFIED = "unidentified"  # a database the service has not migrated yet (no id)
EARLIER = "earlier"
MAX_ID = 2**63 - 1  # SQLite's largest rowid: anything else is not an id the Pi made
EXIT_BAD_EXPORT, EXIT_FAILED = 9, 1  # copies of edge/errors.py ExitCode (tests/test_exit_codes.py)


class PullError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def read_table(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of an exported CSV, ids checked: whole numbers, in range, increasing."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PullError(EXIT_BAD_EXPORT, f"{what}: not a readable CSV: {exc}") from None
    if not rows or not rows[0] or rows[0][0] != "id":
        start = ",".join(rows[0])[:80] if rows and rows[0] else "nothing"
        raise PullError(EXIT_BAD_EXPORT, f"{what} is not a CSV with an id column: '{start}'")
    previous = 0
    for number, row in enumerate(rows[1:], 2):
        value = row[0] if row else ""
        if not value.isdigit() or not 0 < int(value) <= MAX_ID or int(value) <= previous:
            raise PullError(
                EXIT_BAD_EXPORT, f"{what}, line {number}: id {value[:30]!r} is not a row id after {previous}"
            )
        previous = int(value)
    return rows[0], rows[1:]


def write_atomically(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """The new file appears whole or not at all (a temp file beside it, then a rename)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise PullError(EXIT_FAILED, f"cannot write {path}: {exc}") from None


def last_id(path: Path) -> int:
    if not path.is_file():
        return 0
    _, rows = read_table(path, str(path))
    return int(rows[-1][0]) if rows else 0


def folder_name(database_id: object) -> str:
    text = str(database_id or "")
    return text if text.isalnum() and len(text) <= 64 else UNIDENTIFIED


def runs_match(held: Path, fresh_header: list[str], fresh: list[list[str]]) -> bool:
    """Whether runs pulled earlier are this database's: every held run the host still has
    started at the same moment on the same machine."""
    header, rows = read_table(held, str(held))

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


def todays_columns(table: str, header: list[str]) -> list[str]:
    """A header as a host before schema 6 wrote it, in today's column names (others unchanged)."""
    renamed = COLUMNS_BEFORE_6.get(table, {})
    if not renamed or NAMED_TODAY[table] in header:
        return header
    return [renamed.get(column, column) for column in header]


def header_of(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PullError(EXIT_FAILED, f"{path}: not a readable CSV: {exc}") from None


def rename_layout_2(host_dir: Path) -> list[str]:
    """Give the files of every database folder under HOST_DIR today's names (layout 3): views in
    views.csv, cells in cells.csv, today's column names. Decided by each file's columns, not by
    the LAYOUT file: a cells.csv with a frame_id column holds views. Returns the folders renamed."""
    renamed = []
    for folder in sorted(path for path in host_dir.iterdir() if path.is_dir() and not path.name.startswith(".")):
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
                header, rows = read_table(path, str(path))
                write_atomically(path, todays_columns(table, header), rows)
                changed = True
        if changed:
            renamed.append(folder.name)
    return renamed


def export_plan(status: dict[str, object], database_dir: Path) -> list[str]:
    """For each table to pull: its name here, its name on the host and the last id held here
    (empty for runs, pulled whole). A host before schema 6 knows views and cells as cells and
    tracks; one before cells existed (metascope 0.1) has none to pull."""
    version = status.get("schema_version")
    old_names = not isinstance(version, int) or version < RENAMED_IN_6
    tables = status.get("tables")
    lines = []
    for table in TABLES:
        remote = TABLES_BEFORE_6.get(table, table) if old_names else table
        if table == "cells" and old_names and not (isinstance(tables, list) and remote in tables):
            continue
        after = "" if table == "runs" else str(last_id(database_dir / f"{table}.csv"))
        lines.append(f"{table}\t{remote}\t{after}")
    return lines


def prepare(host_dir: Path, status_json: Path, runs_csv: Path, answer: Path) -> None:
    """Arrange HOST_DIR for this pull; ANSWER gets the database folder and the export plan."""
    try:
        status = json.loads(status_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PullError(EXIT_BAD_EXPORT, f"metascope status --json: not JSON: {exc}") from None
    if not isinstance(status, dict):
        raise PullError(EXIT_BAD_EXPORT, "metascope status --json: not a JSON object")
    name = folder_name(status.get("database_id"))
    database_dir = host_dir / name
    runs_header, fresh_runs = read_table(runs_csv, "the runs export")
    try:
        host_dir.mkdir(parents=True, exist_ok=True)
        moved = migrate_first_layout(host_dir, database_dir, runs_header, fresh_runs)
        renamed = rename_layout_2(host_dir)
        database_dir.mkdir(exist_ok=True)
        (host_dir / "LAYOUT").write_text(LAYOUT + "\n", encoding="utf-8")
        (host_dir / "CURRENT").write_text(name + "\n", encoding="utf-8")
    except OSError as exc:
        raise PullError(EXIT_FAILED, f"cannot arrange {host_dir}: {exc}") from None
    if moved == name:
        print(f"moved the rows an earlier version pulled into {host_dir.name}/{name}/ (the same database)")
    elif moved:
        print(
            f"the rows pulled before are from another database than the one on the host now: "
            f"moved them to {host_dir.name}/{moved}/; this pull starts {host_dir.name}/{name}/"
        )
    if renamed:
        print(
            f"renamed the files pulled before into today's names in {host_dir.name}/{{{','.join(renamed)}}}/: "
            "views.csv (one row per model call, was cells.csv) and cells.csv (one row per cell, was tracks.csv)"
        )
    if name == UNIDENTIFIED:
        print(f"the host's database has no id yet (metascope there is older, or has not run since an upgrade): {name}/")
    answer.write_text("\n".join([str(database_dir), *export_plan(status, database_dir)]) + "\n", encoding="utf-8")


def merge(database_dir: Path, work: Path, label: str) -> list[str]:
    """Check every exported table first, then write: a bad export changes nothing."""
    tables = [table for table in TABLES if (work / f"{table}.csv").is_file()]
    incoming = {table: read_table(work / f"{table}.csv", f"the export of {table}") for table in tables}
    planned: dict[str, tuple[list[str], list[list[str]]]] = {}
    messages = []
    for table, (exported, rows) in incoming.items():
        header = todays_columns(table, exported)
        path = database_dir / f"{table}.csv"
        if not path.is_file():
            planned[table] = (header, rows)
            messages.append(f"{label}: {table}: {len(rows)} rows")
            continue
        held_header, held = read_table(path, str(path))
        if len(held_header) < len(header) and header[: len(held_header)] == held_header:
            # The host's schema gained columns (a migration appends them): rows pulled before
            # have them empty, as the host's own old rows have them NULL.
            held = [row + [""] * (len(header) - len(held_header)) for row in held]
            messages.append(f"{label}: {table}: new columns {', '.join(header[len(held_header) :])}")
            held_header = header
        if held_header != header:
            raise PullError(
                EXIT_FAILED, f"the columns of {table} changed; move {path} aside and pull again to start a new file"
            )
        if table in APPENDED:
            after = int(held[-1][0]) if held else 0
            new = [row for row in rows if int(row[0]) > after]
            planned[table] = (header, held + new)
            messages.append(
                f"{label}: {table}: " + (f"{len(new)} new rows (after id {after})" if new else "no new rows")
            )
        else:
            fresh = {row[0] for row in rows}
            kept = [row for row in held if row[0] not in fresh]  # rows the host has since deleted stay
            planned[table] = (header, sorted(kept + rows, key=lambda row: int(row[0])))
            messages.append(f"{label}: {table}: {len(rows)} rows on the host, refreshed")
    for table, (header, rows) in planned.items():
        write_atomically(database_dir / f"{table}.csv", header, rows)
    return messages


def status_field(status_json: Path, keys: list[str]) -> str:
    value: object = json.loads(status_json.read_text(encoding="utf-8"))
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise PullError(EXIT_BAD_EXPORT, f"metascope status --json has no {'.'.join(keys)}")
        value = value[key]
    if not isinstance(value, str) or not value:
        raise PullError(EXIT_BAD_EXPORT, f"metascope status --json: {'.'.join(keys)} is empty")
    return value


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 5 and argv[0] == "prepare":
            prepare(Path(argv[1]), Path(argv[2]), Path(argv[3]), Path(argv[4]))
        elif len(argv) >= 3 and argv[0] == "field":
            print(status_field(Path(argv[1]), argv[2:]))
        elif len(argv) == 4 and argv[0] == "merge":
            print("\n".join(merge(Path(argv[1]), Path(argv[2]), argv[3])))
        else:
            print(__doc__.split("\n\n")[1], file=sys.stderr)
            return 2
    except PullError as exc:
        print(f"pull.sh: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
