"""Which database of the results store a pull goes into: the Pi's present database, by its id, and
its epoch. A database that went back in time (a backup restored on the Pi: its ids repeat) is
told by its runs: a run pulled before that the host now has with another start or host, or with
fewer frames or views than were pulled, or a last run older than the last one pulled. Its rows
from then on are another epoch of the same database, in their own folder (<id>.epoch2...), so
the rows pulled before are kept as they were and the new ones are pulled whole.

(Retention on the Pi deletes old runs: a run pulled before that the host no longer has is no sign.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from pull_errors import EXIT_BAD_EXPORT, PullError
from pull_store import Store

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


def changed(run_id: str, then: dict[str, str], now: dict[str, str]) -> str | None:
    """How one run pulled before differs on the host now, when that cannot happen going forward."""
    for column in ("started_at", "host"):
        if column in then and column in now and then[column] != now[column]:
            return f"run {run_id} has {column} {now[column]!r} on the host, {then[column]!r} when pulled"
    for column in ("frames", "views"):
        before, after = then.get(column, ""), now.get(column, "")
        if before.isascii() and before.isdigit() and after.isascii() and after.isdigit() and int(after) < int(before):
            return f"run {run_id} has {after} {column} on the host, {before} when pulled"
    return None


def went_back(store: Store, key: int, header: list[str], rows: list[list[str]]) -> str | None:
    """Why the host's database is no longer the one pulled into ``key`` (None: it is)."""
    names = store.columns(key, "runs")
    if not names or not rows:
        return None
    held = {row[0]: dict(zip(names, row, strict=True)) for row in store.rows(key, "runs", names)}
    fresh = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    if not held:
        return None
    last_held, last_fresh = max(map(int, held)), max(map(int, fresh))
    if last_fresh < last_held:
        return f"its last run is {last_fresh}, and run {last_held} was pulled"
    return next(
        (why for run_id, then in held.items() if run_id in fresh and (why := changed(run_id, then, fresh[run_id]))),
        None,
    )


def choose(store: Store, database_id: str, runs: tuple[list[str], list[list[str]]]) -> Target:
    """The latest epoch of this database when it is held and has not gone back in time since; a
    new epoch when it has; a new database in its own folder when none is held."""
    held = store.databases(database_id)
    if not held:
        return Target(database_id, 1, database_id, None)
    latest = held[-1]
    why = went_back(store, latest.key, *runs)
    if why is None:
        return Target(database_id, latest.epoch, latest.folder, latest.key)
    epoch = latest.epoch + 1
    return Target(database_id, epoch, f"{database_id}.epoch{epoch}", None, note=f"went back in time: {why}")
