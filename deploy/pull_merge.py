#!/usr/bin/env python3
"""The desktop half of deploy/pull.sh: where a pull's rows go, and appending them safely.

Standard library only (the desktop needs no metascope install). pull.sh fetches, this decides:

    prepare HOST_DIR STATUS_JSON RUNS_CSV ANSWER  -> ANSWER: DATABASE_DIR on the first line, then one line
                                             per table to export: LOCAL_NAME, the host's name for it
                                             and the last id held, tab-separated
    merge HOST_DIR WORK_DIR LABEL            -> appends WORK_DIR/{cells,views,frames,runs}.csv to the store
    csv HOST_DIR                             -> writes the CSV files from the store (only what is new)
    field STATUS_JSON KEY...                 -> prints one value of `metascope status --json`

Layout 4: HOST_DIR/results.sqlite holds every row pulled (deploy/pull_store.py), appended in one
transaction per pull; HOST_DIR/<folder>/ holds one results database's CSV files (cells.csv: one
row per cell, views.csv: one row per model call on a cell, frames.csv, runs.csv), snapshots/ and
crops/; HOST_DIR/CURRENT names the folder the latest pull wrote. Every database a Pi makes (at
first start, and again after a re-flash, a reinstall or `rm metascope.db`) has a random id, so
rows that share ids but belong to different databases are never mixed. Folders pulled by
earlier versions are carried over on the first pull (deploy/pull_legacy.py), with a message.

Exit status (edge/errors.py ExitCode, copies in deploy/pull_errors.py): 0 done; 9 what the host
sent is not usable (named; nothing written); 12 the results folder cannot be used (named); 1 any
other local problem.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from pull_csv import write_csvs
from pull_errors import EXIT_BAD_EXPORT, EXIT_PULL_TARGET_UNUSABLE, EXIT_USAGE, PullError, exit_status
from pull_intake import Export, read_small
from pull_legacy import import_layout_3, migrate_first_layout, rename_layout_2
from pull_store import LAYOUT, TABLES, ResultsStore, Store
from pull_target import UNIDENTIFIED, Target, choose, database_name

# Pulled in this order: a cell is committed together with or after its views, a view with or
# after its frame, and a frame after its run, so every row pulled has its views, frame and run in
# the same or an earlier pull (runs, replaced by id, come last).
APPENDED = ("cells", "views", "frames")  # runs are replaced: a run's end and totals change as it goes
# Before schema 6 (metascope 0.3) the tables views and cells were called cells and tracks; a
# host tells its schema version in `status --json`.
RENAMED_IN_6 = 6
TABLES_BEFORE_6 = {"views": "cells", "cells": "tracks"}
CARRIED_OVER = "carried_over"  # meta key: the folders of earlier layouts were carried over


def carry_over(store: ResultsStore, host_dir: Path, name: str, runs: tuple[list[str], list[list[str]]]) -> None:
    """Bring what earlier versions of pull.sh left in HOST_DIR into the store (once), saying so."""
    moved = migrate_first_layout(host_dir, host_dir / name, *runs)
    renamed = rename_layout_2(host_dir)
    imported = import_layout_3(store, host_dir)
    with store.transaction():
        store.set_meta(CARRIED_OVER, "yes")
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
    if imported:
        print(
            f"carried the rows pulled before into {host_dir.name}/results.sqlite ({LAYOUT}: pulls append, whatever "
            f"is held) from the CSV files of {host_dir.name}/{{{','.join(imported)}}}/; those files stay and are "
            "kept up to date"
        )


def export_plan(status: dict[str, object], store: Store, key: int | None) -> list[str]:
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
        after = "" if table == "runs" else str(store.last_id(key, table))
        lines.append(f"{table}\t{remote}\t{after}")
    return lines


def read_status(status_json: Path) -> dict[str, object]:
    try:
        status = json.loads(status_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PullError(EXIT_BAD_EXPORT, f"metascope status --json: not JSON: {exc}") from None
    if not isinstance(status, dict):
        raise PullError(EXIT_BAD_EXPORT, "metascope status --json: not a JSON object")
    return status


def prepare(host_dir: Path, status_json: Path, runs_csv: Path, answer: Path) -> None:
    """Arrange HOST_DIR for this pull; ANSWER gets the database folder and the export plan, and
    target.json beside it the database the rows go into (merge reads it)."""
    status = read_status(status_json)
    name = database_name(status.get("database_id"))
    runs = read_small(runs_csv, "runs", "the runs export")
    store = ResultsStore(host_dir)
    try:
        if store.meta(CARRIED_OVER) is None:
            carry_over(store, host_dir, name, runs)
        target = choose(store, name, runs)
        plan = export_plan(status, store, target.key)
        previous = store.databases(name)
    finally:
        store.close()
    if target.note and previous:
        print(
            f"the database on the host {target.note} (a backup restored?): what was pulled before stays in "
            f"{host_dir.name}/{previous[-1].folder}/; this pull starts epoch {target.epoch}, "
            f"{host_dir.name}/{target.folder}/, with every row the host has"
        )
    if name == UNIDENTIFIED:
        print(f"the host's database has no id yet (metascope there is older, or has not run since an upgrade): {name}/")
    target.save(answer.parent / "target.json")
    answer.write_text("\n".join([str(host_dir / target.folder), *plan]) + "\n", encoding="utf-8")


def merge_table(store: Store, key: int, table: str, path: Path, label: str) -> list[str]:
    """One exported table into the store (inside the caller's transaction); what it did."""
    with Export(path, table, f"the export of {table}") as export:
        gained = store.widen(key, table, export.header)
        messages = [f"{label}: {table}: new columns {', '.join(gained)}"] if gained else []
        if table in APPENDED:
            after = store.last_id(key, table)
            count = store.insert(key, table, export.header, (row for row in export.rows if int(row[0]) > after))
            done = f"{count} new rows (after id {after})" if count else "no new rows"
        else:
            count = store.insert(key, table, export.header, export.rows, replace=True)
            done = f"{count} rows on the host, refreshed"
    return [*messages, f"{label}: {table}: {done}"]


def land(store: Store, target: Target, work: Path, label: str) -> list[str]:
    """Every table exported into WORK into ``target``'s database, inside the caller's transaction.
    Also the PostgreSQL lander's (deploy/pull_postgres.py: a store with the same methods)."""
    held = store.databases(target.database_id)
    key = next((db.key for db in held if db.epoch == target.epoch), None)
    if key is None:
        key = store.add_database(target.database_id, target.epoch, target.folder, target.note)
    store.touch(key)
    messages = []
    for table in TABLES:
        if (work / f"{table}.csv").is_file():
            messages += merge_table(store, key, table, work / f"{table}.csv", label)
    return messages


def merge(host_dir: Path, work: Path, label: str) -> list[str]:
    """Every exported table into the store in one transaction: a bad export changes nothing."""
    target = Target.load(work / "target.json")
    store = ResultsStore(host_dir)
    try:
        with store.transaction():
            messages = land(store, target, work, label)
            store.set_meta("current", target.folder)
    finally:
        store.close()
    (host_dir / target.folder).mkdir(exist_ok=True)
    (host_dir / "LAYOUT").write_text(LAYOUT + "\n", encoding="utf-8")
    (host_dir / "CURRENT").write_text(target.folder + "\n", encoding="utf-8")
    return messages


def write_csv_files(host_dir: Path) -> list[str]:
    """HOST_DIR's CSV files from its store, the current database's runs refreshed."""
    if not (host_dir / "results.sqlite").is_file():
        raise PullError(EXIT_PULL_TARGET_UNUSABLE, f"{host_dir}: no results.sqlite here (pull into it first)")
    store = ResultsStore(host_dir)
    try:
        current = store.meta("current")
        key = next((db.key for db in store.databases() if db.folder == current), None)
        return write_csvs(store, refresh_key=key)
    finally:
        store.close()


def status_field(status_json: Path, keys: list[str]) -> str:
    value: object = read_status(status_json)
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise PullError(EXIT_BAD_EXPORT, f"metascope status --json has no {'.'.join(keys)}")
        value = value[key]
    if not isinstance(value, str) or not value:
        raise PullError(EXIT_BAD_EXPORT, f"metascope status --json: {'.'.join(keys)} is empty")
    return value


def run(argv: list[str]) -> None:
    if len(argv) == 5 and argv[0] == "prepare":
        prepare(Path(argv[1]), Path(argv[2]), Path(argv[3]), Path(argv[4]))
    elif len(argv) >= 3 and argv[0] == "field":
        print(status_field(Path(argv[1]), argv[2:]))
    elif len(argv) == 4 and argv[0] == "merge":
        print("\n".join(merge(Path(argv[1]), Path(argv[2]), argv[3])))
    elif len(argv) == 2 and argv[0] == "csv":
        written = write_csv_files(Path(argv[1]))
        print(f"{Path(argv[1]).name}: CSV files: " + (", ".join(written) if written else "up to date"))
    else:
        raise PullError(EXIT_USAGE, "usage:\n" + __doc__.split("\n\n")[1])


def main(argv: list[str]) -> int:
    return exit_status(run, argv, sqlite3.Error, "the results store", "the results folder")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
