"""Which database of the results store a pull goes into: the Pi's present database, by its id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from pull_store import ResultsStore

UNIDENTIFIED = "unidentified"  # a database the service has not migrated yet (no id)


class Target(NamedTuple):
    """Where this pull's rows go: a database of the store (key None: not held yet) and its folder."""

    database_id: str
    epoch: int
    folder: str
    key: int | None
    note: str | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self._asdict()), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Target:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def database_name(database_id: object) -> str:
    text = str(database_id or "")
    return text if text.isalnum() and len(text) <= 64 else UNIDENTIFIED


def choose(store: ResultsStore, database_id: str) -> Target:
    """The latest epoch of this database when it is held, else a new database in its own folder."""
    held = store.databases(database_id)
    if not held:
        return Target(database_id, 1, database_id, None)
    latest = held[-1]
    return Target(database_id, latest.epoch, latest.folder, latest.key)
