#!/usr/bin/env python3
"""The desktop half of deploy/pull.sh: where a pull's rows go, and merging them in safely.

Standard library only (the desktop needs no metascope install). pull.sh fetches, this decides:

    prepare HOST_DIR STATUS_JSON RUNS_CSV ANSWER  -> ANSWER: DATABASE_DIR, CELLS_AFTER, FRAMES_AFTER and
                                             TRACKS_AFTER, tab-separated (TRACKS_AFTER "-": the host's
                                             database has no tracks table yet)
    merge DATABASE_DIR WORK_DIR LABEL        -> merges WORK_DIR/{tracks,cells,frames,runs}.csv in
    field STATUS_JSON KEY...                 -> prints one value of `metascope status --json`

Layout (version 2): HOST_DIR/LAYOUT names the version; HOST_DIR/<database id>/ holds one
results database's tracks.csv, cells.csv, frames.csv, runs.csv and snapshots/. Every database a Pi makes
(at first start, and again after a re-flash, a reinstall or `rm metascope.db`) has a random
id, so rows that share ids but belong to different databases are never mixed. HOST_DIR/CURRENT
names the folder the latest pull wrote. A folder pulled by the first layout (the CSVs straight
in HOST_DIR) is moved, on the first pull, into the folder of the database it came from when its
runs match that database's, else into HOST_DIR/earlier/.

Exit status: 0 done; 5 what the host sent is not usable (named; nothing written); 1 a local
file problem.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

LAYOUT = "metascope-pull/2"
TABLES = ("cells", "frames", "runs")
TRACKS = "tracks"  # one row per cell; only from a host whose database has the table (metascope 0.2 on)
APPENDED = ("cells", "frames", TRACKS)  # runs are replaced: a run's end and totals change as it goes
NO_TRACKS = "-"
UNIDENTIFIED = "unidentified"  # a database the service has not migrated yet (no id)
EARLIER = "earlier"
MAX_ID = 2**63 - 1  # SQLite's largest rowid: anything else is not an id the Pi made
EXIT_BAD_EXPORT, EXIT_LOCAL = 5, 1


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
        raise PullError(EXIT_LOCAL, f"cannot write {path}: {exc}") from None


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
    old = [host_dir / f"{table}.csv" for table in TABLES] + [host_dir / "snapshots"]
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


def prepare(host_dir: Path, status_json: Path, runs_csv: Path, answer: Path) -> None:
    """Arrange HOST_DIR for this pull; ANSWER gets "DATABASE_DIR<TAB>CELLS_AFTER<TAB>FRAMES_AFTER"."""
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
        database_dir.mkdir(exist_ok=True)
        (host_dir / "LAYOUT").write_text(LAYOUT + "\n", encoding="utf-8")
        (host_dir / "CURRENT").write_text(name + "\n", encoding="utf-8")
    except OSError as exc:
        raise PullError(EXIT_LOCAL, f"cannot arrange {host_dir}: {exc}") from None
    if moved == name:
        print(f"moved the rows an earlier version pulled into {host_dir.name}/{name}/ (the same database)")
    elif moved:
        print(
            f"the rows pulled before are from another database than the one on the host now: "
            f"moved them to {host_dir.name}/{moved}/; this pull starts {host_dir.name}/{name}/"
        )
    if name == UNIDENTIFIED:
        print(f"the host's database has no id yet (metascope there is older, or has not run since an upgrade): {name}/")
    tables = status.get("tables")
    tracks = last_id(database_dir / f"{TRACKS}.csv") if isinstance(tables, list) and TRACKS in tables else NO_TRACKS
    after = f"{last_id(database_dir / 'cells.csv')}\t{last_id(database_dir / 'frames.csv')}\t{tracks}"
    answer.write_text(f"{database_dir}\t{after}\n", encoding="utf-8")


def merge(database_dir: Path, work: Path, label: str) -> list[str]:
    """Check every exported table first, then write: a bad export changes nothing."""
    tables = (TRACKS, *TABLES) if (work / f"{TRACKS}.csv").is_file() else TABLES
    incoming = {table: read_table(work / f"{table}.csv", f"the export of {table}") for table in tables}
    planned: dict[str, tuple[list[str], list[list[str]]]] = {}
    messages = []
    for table, (header, rows) in incoming.items():
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
                EXIT_LOCAL, f"the columns of {table} changed; move {path} aside and pull again to start a new file"
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
