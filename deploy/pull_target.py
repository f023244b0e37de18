"""Which database of the results store a pull goes into: the Pi's present database, by its id."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from pull_errors import EXIT_BAD_EXPORT, PullError
from pull_store import ResultsStore

UNIDENTIFIED = "unidentified"  # a database the service has not migrated yet (no id)
# What a Pi's database id is: uuid4().hex (edge/record/schema.py), lowercase hex digits. Anything
# else is refused, not cleaned up: the id names a folder beside CURRENT, LAYOUT and earlier/.
DATABASE_ID = re.compile(r"[0-9a-f]{1,64}")


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
    """The folder name of the host's database: its id, or UNIDENTIFIED for a database older than
    ids (none given)."""
    if database_id is None or database_id == "":
        return UNIDENTIFIED
    if not isinstance(database_id, str) or not DATABASE_ID.fullmatch(database_id):
        shown = database_id[:70] if isinstance(database_id, str) else database_id
        raise PullError(
            EXIT_BAD_EXPORT, f"metascope status --json: database id {shown!r} is not one a Pi makes (hex digits)"
        )
    return database_id


def choose(store: ResultsStore, database_id: str) -> Target:
    """The latest epoch of this database when it is held, else a new database in its own folder."""
    held = store.databases(database_id)
    if not held:
        return Target(database_id, 1, database_id, None)
    latest = held[-1]
    return Target(database_id, latest.epoch, latest.folder, latest.key)
