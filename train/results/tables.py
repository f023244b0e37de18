"""The rows of one pulled CSV table, checked before the report uses them. A pulled folder may
hold anything (an edited file, a short row, a time a rig never writes): a table without a column
the report needs is left out whole, a row that is not whole or holds a time that is not one is
left out alone, and each says why, for the page to name.

Standard library only."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

# The columns without which a table's rows cannot be placed (which run, which database row).
REQUIRED = {"runs": ("id",), "frames": ("run_id",), "views": ("run_id",), "cells": ("run_id",)}
# Times a rig can have written: a Pi's clock never starts before its image was built. Year 1 or
# 9999 is no measurement, and would stretch every time axis over millennia (or past datetime's end).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
EXAMPLES = 3  # bad rows named per file; the rest are counted


def shown(text: str) -> str:
    """A value from the file as a message quotes it: short, whatever the file holds."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def time_problem(column: str, text: str) -> str | None:
    """Why ``text`` is not a time a rig writes (2025-01-31T12:00:00.000000Z), or None (empty is fine)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return f"{column} {shown(text)} is not a time"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the Pi writes UTC
    if not EARLIEST <= moment < LATEST:
        return f"{column} {shown(text)} is not a time a rig writes (2000 to 2099)"
    return None


def parse_time(text: str) -> datetime | None:
    """A time as the Pi writes it, in UTC; None for an empty field or one time_problem refuses."""
    if not text or time_problem("", text) is not None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def row_problem(row: dict, width: int, required: tuple[str, ...], times: list[str]) -> str | None:
    """Why a row of a table with ``width`` columns is left out, or None."""
    if None in row:  # csv.DictReader puts the fields past the header under the key None
        return f"{width + len(row[None])} fields where the header has {width}"
    given = sum(value is not None for value in row.values())
    if given < width:
        return f"{given} of {width} fields"
    for column in required:
        if not row[column]:
            return f"no {column}"
    return next((problem for column in times if (problem := time_problem(column, row[column]))), None)


def checked_rows(name: str, text: str, table: str) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of ``table`` (its CSV ``text``, from the file ``name``) the report can use, and what
    was left out and why. Raises csv.Error for text that is no CSV (a NUL byte, a huge field)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = ((f"line {reader.line_num}", row) for row in reader)
    return usable_rows(name, reader.fieldnames or [], rows, table)


def usable_rows(
    name: str, fields: Sequence[str], rows: Iterable[tuple[str, dict]], table: str
) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of ``table`` with columns ``fields`` (each with where it was, e.g. "line 5") the
    report can use, and what was left out and why, each message beginning with ``name``. Any
    source of rows (a CSV file, a results store) passes through here."""
    required = REQUIRED.get(table, ())
    missing = next((column for column in required if column not in fields), None)
    if missing is not None:
        columns = ", ".join(shown(field) for field in fields[:12]) or "none"
        return [], [f"{name}: no {missing} column (its columns: {columns}): not read"]
    times = [field for field in fields if field.endswith("_at")]
    usable, bad = [], []
    for where, row in rows:
        problem = row_problem(row, len(fields), required, times)
        if problem is None:
            usable.append(row)
        else:
            bad.append(f"{where} ({problem})")
    if not bad:
        return usable, []
    more = f" and {len(bad) - EXAMPLES} more" if len(bad) > EXAMPLES else ""
    return usable, [f"{name}: {len(bad)} row(s) left out: {', '.join(bad[:EXAMPLES])}{more}"]
