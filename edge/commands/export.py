"""`metascope export`: stream a table to stdout as CSV or JSON lines, ordered by id.

The contract deploy/pull.sh relies on: CSV has a header whose first column is `id`; rows come
in id order; `--after-id N` gives only rows newer than N (ids are never reused); times are ISO
8601 UTC; no rows is just the header and exit 0; no database or an unreadable one is a
message on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

from edge.commands.common import CommandError, UsageError, add_config_args, config_from_args
from edge.record.schema import TABLES

OLD_CELLS_NAME = "tracks"  # what the cells table was called before schema 6 (metascope 0.3)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="stream results (cells, views, frames or runs) to stdout as CSV or JSON lines",
        description="Stream one table of the results database to stdout, ordered by id: cells (one row per "
        "tracked cell, with its averaged call, written when the cell's track closes), views (one row per model "
        "call on a cell), frames or runs. "
        "Example: ssh pi metascope export --table cells --since 2025-01-31 > cells.csv",
    )
    add_config_args(parser)
    parser.add_argument(
        "--table",
        choices=[*TABLES, OLD_CELLS_NAME],
        default="cells",
        help=f"default: cells (one row per cell); {OLD_CELLS_NAME!r} is the old name of cells, kept for a release",
    )
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default: csv")
    parser.add_argument(
        "--since", metavar="ISO8601", help="rows at or after this time (UTC unless a zone is given; cells: last seen)"
    )
    parser.add_argument("--until", metavar="ISO8601", help="rows before this time")
    parser.add_argument("--after-id", type=row_id, metavar="N", help="rows with id greater than N (incremental pulls)")
    parser.set_defaults(handler=export)


# SQLite's largest rowid: ids are never larger, and a larger number does not fit its integers.
MAX_ROW_ID = 2**63 - 1


def row_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"{text} is not a row id (0 to {MAX_ROW_ID})")
    return value


def _time_arg(name: str, text: str | None, parse_time) -> str | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except (ValueError, OverflowError) as exc:  # a zone can push a year-9999 time past datetime's range
        raise UsageError(f"--{name}: {exc}") from None


def export(args: argparse.Namespace) -> int:
    from edge.record.reading import StoreError, open_readonly, select_rows
    from edge.record.times import parse_time

    config = config_from_args(args)
    table = args.table
    if table == OLD_CELLS_NAME:
        print("metascope export: --table tracks is now --table cells (one row per cell); the old name goes in a "
              "later release", file=sys.stderr)  # fmt: skip
        table = "cells"
    since, until = (_time_arg(name, getattr(args, name), parse_time) for name in ("since", "until"))
    try:
        db = open_readonly(config.database_path)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    try:
        columns, rows = select_rows(db, table, since, until, args.after_id)
        out = sys.stdout
        if args.format == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(row)
        else:
            for row in rows:
                out.write(json.dumps(dict(zip(columns, row, strict=True))) + "\n")
        out.flush()
    except Exception as exc:
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            raise CommandError(f"{config.database_path}: cannot read the results database: {exc}") from None
        raise
    finally:
        db.close()
    return 0
