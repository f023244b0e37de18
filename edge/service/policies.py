"""The service loop's small decisions, each testable alone: how many failures in a row end a
run, when a periodic job is due, whether the disk has room for results, and how retention is
spread over the loop's turns."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from edge.record.store import ResultStore

DISK_CHECK_INTERVAL_S = 1.0
RETENTION_INTERVAL_S = 600.0


def watchdog_problem(watchdog_period_s: float | None, timeout_s: float, ping_interval_s: float) -> str | None:
    """Why these settings would let systemd's watchdog kill a healthy service, or None.

    The loop pings every turn (at most every ``ping_interval_s``), and the longest turn is a
    capture waiting ``source.timeout_s`` for a stalled camera; the longest gap between pings
    must fit in half the period (sd_notify(3)'s advice), or SIGABRT kills the run before it
    counts its ``source.max_failures`` stalls and exits in order.
    """
    if watchdog_period_s is None or timeout_s + ping_interval_s <= watchdog_period_s / 2:
        return None
    return (
        f"source.timeout_s: {timeout_s:g} s (plus {ping_interval_s:g} s between pings) is more than half the "
        f"unit's WatchdogSec ({watchdog_period_s:g} s): a stalled capture would be killed by the watchdog "
        "instead of counted; lower source.timeout_s or raise WatchdogSec with a drop-in"
    )


class FailureStreak:
    """Failures in a row: ``failed()`` counts one and says whether the limit is reached;
    ``succeeded()`` starts again from zero."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0

    def failed(self) -> bool:
        self.count += 1
        return self.count >= self.limit

    def succeeded(self) -> None:
        self.count = 0


class Every:
    """Due once per ``interval_s`` (monotonic clock): at the first look, or ``first_after_s``
    after ``now`` (default: the time of creation) when that is given."""

    def __init__(self, interval_s: float, first_after_s: float = 0.0, now: float | None = None):
        self.interval_s = interval_s
        self.next = float("-inf")
        if first_after_s:
            self.next = (time.monotonic() if now is None else now) + first_after_s

    def due(self, now: float) -> bool:
        if now < self.next:
            return False
        self.next = now + self.interval_s
        return True


class DiskGuard:
    """Whether results may be written: free space under the state directory at or above
    ``min_free_mb``, looked at no more often than ``interval_s``. Each look that finds too
    little calls ``on_low(free_bytes)`` (the service commits what is batched and warns)."""

    def __init__(
        self,
        path: Path,
        min_free_mb: float,
        free_space: Callable[[Path], int],
        on_low: Callable[[int], None],
        interval_s: float | None = None,
    ):
        self.path, self.min_free_bytes = path, min_free_mb * 1024 * 1024
        self.free_space, self.on_low = free_space, on_low
        self.check = Every(DISK_CHECK_INTERVAL_S if interval_s is None else interval_s)
        self.ok = True

    def allows_writing(self, now: float) -> bool:
        if self.check.due(now):
            free = self.free_space(self.path)
            self.ok = free >= self.min_free_bytes
            if not self.ok:
                self.on_low(free)
        return self.ok


class Retention:
    """Deletes results past ``retention_days`` or over ``max_db_mb``: a pass starts every
    ``interval_s`` (the first at once), and as soon as the database is found over ``max_db_mb``,
    looked at after every commit (a 1 MB cap grew to 14 MB between two 600 s passes); each
    loop turn does at most one bounded step of a pass (ResultStore.retention_step), so a large
    clean-up never holds up a frame for long."""

    def __init__(
        self,
        retention_days: float,
        max_db_mb: float,
        on_error: Callable[[sqlite3.Error], None],
        interval_s: float = RETENTION_INTERVAL_S,
    ):
        self.retention_days, self.max_db_mb, self.on_error = retention_days, max_db_mb, on_error
        self.start = Every(interval_s)
        self.commits_seen = 0
        self.in_pass = False
        self.deleted_this_pass = 0

    def step(self, store: ResultStore, now: float) -> int | None:
        """One step if a pass is under way or due. Returns the pass's total of deleted frames
        when a pass ends, else None."""
        try:
            if not self.in_pass and not self.start.due(now) and not self._over_size(store):
                return None
            self.in_pass = True
            deleted, done = store.retention_step(self.retention_days, self.max_db_mb)
        except sqlite3.Error as exc:
            self.on_error(exc)
            deleted, done = 0, True
        self.deleted_this_pass += deleted
        if not done:
            return None
        total, self.in_pass, self.deleted_this_pass = self.deleted_this_pass, False, 0
        return total

    def _over_size(self, store: ResultStore) -> bool:
        """Whether the database grew over the cap with a commit not looked at yet."""
        if self.max_db_mb <= 0 or store.commits == self.commits_seen:
            return False
        self.commits_seen = store.commits
        return store.retention.over_size(self.max_db_mb)
