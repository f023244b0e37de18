"""Reading what deploy/pull.sh writes: DEST/HOST/<database id>/{cells,views,frames,runs}.csv,
snapshots/ and crops/ (one folder per results database a Pi has had), for one host or many. A
folder an older pull.sh wrote and no pull has renamed yet (views in cells.csv, cells in
tracks.csv) is read under today's names.

read_pulled is the one way in: what it cannot read (a file that is not a regular one inside the
folder, a table without the columns it needs, a bad row) it names and leaves out, so a report is
made from the rest. Standard library only; times stay the fixed-width ISO text the Pi writes,
turned into datetimes where a plot needs them.
"""

from __future__ import annotations

import csv
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import UsageError
from train.results.tables import checked_rows, parse_time

__all__ = ["PulledDatabase", "PulledFolder", "PulledFolderError", "Unreadable", "number", "parse_time", "read_pulled"]

TABLES = ("runs", "frames", "views", "cells")
FILES_BEFORE_LAYOUT_3 = {"views": "cells", "cells": "tracks"}  # what pull.sh called them before metascope 0.4


MAX_CROP_BYTES = 4 << 20  # a rig's crop is its model's window (tens of kB): anything far larger is not one


class PulledFolderError(UsageError):
    """RESULTS_DIR holds nothing a report can be made of; the message says what was looked for."""


class Unreadable(Exception):
    """A file of the pulled folder that was not read (the message says why): the page names it."""


def read_inside(root: Path, path: Path, limit: int | None = None) -> bytes:
    """The bytes of ``path``, a regular file inside ``root``. A pulled folder may hold what
    someone else put there (a crop that is a link to /etc/shadow): a link that leads out of the
    folder is refused, the file is opened without following a link swapped in at its last step
    and without blocking on a FIFO, and a file over ``limit`` bytes is not read."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
        raise Unreadable(f"cannot be opened ({getattr(exc, 'strerror', None) or exc})") from None
    if not real.is_relative_to(root.resolve()):
        raise Unreadable("a link out of the results folder: not read")
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


def read_pulled(results_dir: Path) -> PulledFolder:
    """Every pulled database under RESULTS_DIR (a --dest folder, one host's folder, or one
    database's folder), sorted by host and id, and what could not be read. Work folders of a
    pull under way (.pull.*) are skipped."""
    found, not_read = [], []
    for runs in sorted(results_dir.rglob("runs.csv")):
        folder = runs.parent
        relative = folder.relative_to(results_dir).parts
        if any(part.startswith(".") for part in relative):
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
            f"{results_dir}: no pulled results here (looked for HOST/<database id>/runs.csv, as "
            f"`deploy/pull.sh HOST --dest {results_dir}` writes them)"
        )
    return PulledFolder(found, not_read)
