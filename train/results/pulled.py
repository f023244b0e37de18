"""Reading what deploy/pull.sh writes: DEST/HOST/<database id>/{cells,views,frames,runs}.csv,
snapshots/ and crops/ (one folder per results database a Pi has had), for one host or many. A
folder an older pull.sh wrote and no pull has renamed yet (views in cells.csv, cells in
tracks.csv) is read under today's names.

Standard library and numpy only; times stay the fixed-width ISO text the Pi writes, turned into
datetimes where a plot needs them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import UsageError

TABLES = ("runs", "frames", "views", "cells")
FILES_BEFORE_LAYOUT_3 = {"views": "cells", "cells": "tracks"}  # what pull.sh called them before metascope 0.4


class PulledFolderError(UsageError):
    """RESULTS_DIR holds nothing a report can be made of; the message says what was looked for."""


@dataclass
class PulledDatabase:
    """One results database of one host, as pulled: its tables as lists of dicts (CSV text)."""

    host: str
    database_id: str
    folder: Path
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.database_id}"

    def rows(self, table: str) -> list[dict[str, str]]:
        return self.tables.get(table, [])

    def crop_path(self, track: dict[str, str]) -> Path | None:
        """The crop file of a cell, when its row names one and the pull brought it."""
        name = track.get("crop") or ""
        path = self.folder / "crops" / name
        return path if name and "/" not in name and path.is_file() else None

    def thresholds(self) -> dict[str, float]:
        """Each run's decision threshold (0.5 where the run row has none)."""
        return {run["id"]: number(run.get("threshold"), 0.5) for run in self.rows("runs")}


def number(text: str | None, default: float = float("nan")) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


def parse_time(text: str) -> datetime | None:
    """A time as the Pi writes it (2025-01-31T12:00:00.000000Z); None for an empty field."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PulledFolderError(f"{path}: not a readable CSV: {exc}") from None


def find_databases(results_dir: Path) -> list[PulledDatabase]:
    """Every pulled database under RESULTS_DIR (a --dest folder, one host's folder, or one
    database's folder), sorted by host and id. Work folders of a pull under way (.pull.*) are
    skipped."""
    found = []
    for runs in sorted(results_dir.rglob("runs.csv")):
        folder = runs.parent
        relative = folder.relative_to(results_dir).parts
        if any(part.startswith(".") for part in relative):
            continue
        # pull.sh's layout: HOST/<database id>/; a folder handed over alone is named by itself
        host = folder.parent.name if (folder.parent / "LAYOUT").is_file() else folder.name
        database = PulledDatabase(host=host, database_id=folder.name, folder=folder)
        files = FILES_BEFORE_LAYOUT_3 if (folder / "tracks.csv").is_file() else {}
        for table in TABLES:
            path = folder / f"{files.get(table, table)}.csv"
            if path.is_file():
                database.tables[table] = read_csv(path)
        found.append(database)
    if not found:
        raise PulledFolderError(
            f"{results_dir}: no pulled results here (looked for HOST/<database id>/runs.csv, as "
            f"`deploy/pull.sh HOST --dest {results_dir}` writes them)"
        )
    return found
