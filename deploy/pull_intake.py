"""Reading what a Pi's `metascope export` sent, one row at a time, and refusing what no Pi sends.

A header is a list of plain column names starting with `id`; every row has one value per
column; ids are ASCII digits, above the previous row's id and below MAX_ID. The rows are checked
as they stream into the results store, whose transaction is rolled back on the first bad one:
a host that sends garbage changes nothing here, and memory does not grow with the export.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pull_errors import EXIT_BAD_EXPORT, PullError

# The largest id a pull takes. A Pi's ids count its rows from 1 (SQLite would allow 2**63-1), and
# 2**48 is more than a rig makes at a thousand rows a second for eight thousand years. One crafted
# id near 2**63 would otherwise end every later pull: nothing comes "after" it.
MAX_ID = 2**48
MAX_COLUMNS = 200
COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
ASCII_DIGITS = re.compile(r"[0-9]{1,20}")

# Before schema 6 (metascope 0.3) some columns had other names; a header with the column
# NAMED_TODAY has today's.
COLUMNS_BEFORE_6 = {"frames": {"cells": "detections"}, "runs": {"cells": "views", "tracks": "cells"}}
NAMED_TODAY = {"frames": "detections", "runs": "views"}


def todays_columns(table: str, header: list[str]) -> list[str]:
    """A header as a host before schema 6 wrote it, in today's column names (others unchanged)."""
    renamed = COLUMNS_BEFORE_6.get(table, {})
    if not renamed or NAMED_TODAY[table] in header:
        return header
    return [renamed.get(column, column) for column in header]


def row_id(value: str, previous: int) -> int | None:
    """The id ``value`` spells when it is one that can follow ``previous``, else None. ASCII only:
    str.isdigit() takes '²' and int() takes '٣'."""
    if not ASCII_DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if previous < number <= MAX_ID else None


def check_header(header: list[str], what: str) -> None:
    if not header or header[0] != "id":
        start = ",".join(header)[:80] if header else "nothing"
        raise PullError(EXIT_BAD_EXPORT, f"{what} is not a CSV with an id column: '{start}'")
    bad = [name for name in header if not COLUMN_NAME.fullmatch(name)]
    if bad or len(header) > MAX_COLUMNS or len(set(header)) != len(header):
        shown = repr(bad[0][:40]) if bad else f"{len(header)} columns, {len(header) - len(set(header))} repeated"
        raise PullError(EXIT_BAD_EXPORT, f"{what}: the header is not a table's columns ({shown})")


def checked_rows(reader: Iterator[list[str]], width: int, what: str, code: int) -> Iterator[list[str]]:
    """The rows of ``reader``, each checked before it is handed on (see the module's rules); a bad
    one ends them with ``code``."""
    previous = 0
    try:
        for number, row in enumerate(reader, 2):
            value = row[0] if row else ""
            found = row_id(value, previous)
            if found is None:
                raise PullError(code, f"{what}, line {number}: id {value[:30]!r} is not a row id after {previous}")
            if len(row) != width:
                raise PullError(code, f"{what}, line {number}: {len(row)} values for {width} columns")
            previous = found
            yield row
    except (csv.Error, UnicodeDecodeError) as exc:
        raise PullError(code, f"{what}: not a readable CSV: {exc}") from None


class Export:
    """One exported table, opened: ``header`` (today's names) and ``rows`` (checked, streamed)."""

    def __init__(self, path: Path, table: str, what: str, code: int = EXIT_BAD_EXPORT) -> None:
        self.what = what
        try:
            self._handle: TextIO = path.open(newline="", encoding="utf-8")
            reader = csv.reader(self._handle)
            exported = next(reader, [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise PullError(code, f"{what}: not a readable CSV: {exc}") from None
        try:
            check_header(exported, what)
        except PullError as exc:
            self._handle.close()
            raise PullError(code, str(exc)) from None
        self.header = todays_columns(table, exported)
        self.rows = checked_rows(reader, len(exported), what, code)

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *_: object) -> None:
        self._handle.close()


def read_small(path: Path, table: str, what: str) -> tuple[list[str], list[list[str]]]:
    """A small table (runs) whole: header and rows."""
    with Export(path, table, what) as export:
        return export.header, list(export.rows)
