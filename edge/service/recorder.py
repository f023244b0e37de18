"""Where a run's results go: the results database, the crops of cells, the snapshots and
status.json. The loop hands it each frame's result; a failure to write any of them is a
rate-limited warning and a counter, never the end of the run (classification goes on), and a
database that cannot be opened for a reason time can fix (a full disk, busy) is tried again until
it can. A corrupt database is moved aside and a new one started, said loudly; one that waiting
cannot fix ends the run with its exit code (edge/record/opening.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.errors import EnvironmentProblem
from edge.logs import RateLimitedWarning, log
from edge.paths import write_json_atomic
from edge.record.crops import CropKeeper
from edge.record.opening import SetAside, failure, is_corrupt, set_aside
from edge.record.reading import StoreError
from edge.record.snapshots import SnapshotWriter
from edge.record.store import ResultStore, RunInfo
from edge.records import ClosedCell, FrameResult
from edge.service.run_stats import RunStats

STORE_RETRY_S = 10.0  # while the results database cannot be opened (a full disk), try again this often


class Recorder:
    def __init__(self, config: Config, stats: RunStats, window_px: int, free_space: Callable[[Path], int]):
        self.config = config
        self.stats = stats
        self.crops = CropKeeper(config.crop_dir, config.crops, window_px, free_space)
        self.snapshots = SnapshotWriter(config.snapshot_dir, config.snapshots, free_space)
        self.store: ResultStore | None = None
        self.run_id: int | None = None
        self._store_warning = RateLimitedWarning()
        self._disk_warning = RateLimitedWarning()
        self._snapshot_warning = RateLimitedWarning()
        self._crop_warning = RateLimitedWarning()
        self._status_warning = RateLimitedWarning()

    # -------------------------------------------------------------- the store
    def open(self, run_info: RunInfo) -> bool:
        """Open the results database and start this run's row in it. A database that cannot be
        opened or written for a while (a full disk, busy) is not fatal: the run classifies without
        storing and the loop calls this again every STORE_RETRY_S, so the service is there when
        space returns. One waiting cannot fix raises (EnvironmentProblem, DatabaseRefused)."""
        try:
            store = ResultStore(self.config.database_path, self.config.store.commit_interval_s,
                                self.config.store.max_db_mb)  # fmt: skip
        except StoreError as exc:
            self._store_warning("store: %s; classifying without storing, trying again every %.0f s", exc,
                                STORE_RETRY_S)  # fmt: skip
            return False
        if store.set_aside is not None:
            self._said_set_aside(store.set_aside)
        try:
            for run_id, frames, cells in store.close_unfinished_runs():
                log.warning("run %d did not stop cleanly (killed, crashed or powered off): closed with its %d "
                            "stored frames; %d cells it was following closed from their stored views",
                            run_id, frames, cells)  # fmt: skip
            self.run_id = store.start_run(run_info)
            store.commit()
        except sqlite3.Error as exc:
            store.rollback()
            store.close_quietly()
            return self._start_failed(exc, run_info)
        self.store = store
        return True

    def _start_failed(self, exc: sqlite3.Error, run_info: RunInfo) -> bool:
        """The run could not start in an open database: corrupt (set aside, and a new database
        opened at once), unwritable (raised), or to be tried again."""
        path = self.config.database_path
        if is_corrupt(exc):
            self._set_aside(exc)
            return self.open(run_info)
        problem = failure(exc, path)
        if not isinstance(problem, StoreError):
            raise problem from exc
        self._store_warning("store: cannot start the run in %s (%s); trying again every %.0f s", path, exc,
                            STORE_RETRY_S)  # fmt: skip
        return False

    def _set_aside(self, exc: sqlite3.Error) -> None:
        path = self.config.database_path
        try:
            aside = set_aside(path)
        except OSError as move_error:
            raise EnvironmentProblem(f"{path}: corrupt ({exc}) and cannot be moved aside: {move_error}") from exc
        self._said_set_aside(SetAside(aside, str(exc)))

    def _said_set_aside(self, aside: SetAside) -> None:
        """A corrupt database moved aside: the journal (an error), status.json and the summary say so."""
        self.stats.database_set_aside = str(aside.path)
        log.error("store: %s was corrupt (%s): moved aside to %s with its write-ahead log, never deleted "
                  "(`sqlite3 %s .recover` reads what it can); a new database is started in its place, its "
                  "rows from now on", self.config.database_path, aside.reason, aside.path, aside.path.name)  # fmt: skip

    def commit_aged(self) -> None:
        """A batch waiting for the next frame is committed once it is old enough even when no
        frame comes (a followed folder, a stalled camera): idle time holds nothing back."""
        if self.store is not None:
            try:
                self.store.maybe_commit()
            except sqlite3.Error as exc:
                self._failed(self.store, exc)

    def _failed(self, store: ResultStore, exc: sqlite3.Error, unstored: int = 0) -> None:
        """A write or commit failed: the batch is dropped and its frames counted unsaved, with
        ``unstored`` frames that never reached the batch."""
        lost = self._drop_batch(store) + unstored
        self.stats.counters.unsaved_frames += unstored
        self.stats.counters.store_errors += 1
        self._store_warning("store: write failed (%s); %d uncommitted frames lost, classification goes on", exc, lost)
        if is_corrupt(exc):  # found by a write: set aside now, a new database at the next try (STORE_RETRY_S)
            store.close_quietly()
            self.store = None
            self._set_aside(exc)

    def _drop_batch(self, store: ResultStore) -> int:
        """Roll the uncommitted batch back and count its frames unsaved; how many there were."""
        store.rollback()
        lost, store.dropped_frames = store.dropped_frames, 0
        self.stats.counters.unsaved_frames += lost
        return lost

    # -------------------------------------------------------------- a frame
    def record(self, result: FrameResult, disk_ok: bool) -> int | None:
        """Store the frame (when the disk allows) and keep its crops; the frame's id, or None
        when it was not stored. The cells it closed get their crops' names first."""
        result.closed = self.crops.link(result.closed)
        store = self.store
        if not disk_ok or store is None:
            self.stats.counters.unsaved_frames += 1
            return None
        try:
            frame_id = store.add_frame(result)
        except sqlite3.Error as exc:
            self._failed(store, exc, unstored=1)
            return None
        try:
            store.maybe_commit()
        except sqlite3.Error as exc:
            self._failed(store, exc)
            return None
        failed = self.crops.files.failed
        self.crops.keep(result, self.run_id)
        if self.crops.files.failed > failed:
            self.stats.counters.crop_failures = self.crops.files.failed
            self._crop_warning("crops: %s; classification goes on", self.crops.files.last_error)
        return frame_id

    def mark_over_budget(self, frame_id: int) -> None:
        if self.store is not None:
            self.store.mark_over_budget(frame_id)

    def snapshot(self, result: FrameResult, frame_id: int, frame_number: int) -> None:
        """An annotated snapshot of a stored frame, when one is due."""
        snapshots = self.snapshots
        if self.store is None or not snapshots.wanted(result, frame_number):
            return
        failed = snapshots.failed
        name = snapshots.write(result, self.run_id)
        if name is not None:
            self.store.set_snapshot(frame_id, name)
        elif snapshots.failed > failed:
            self._snapshot_warning("snapshot: %s; classification goes on", snapshots.last_error)
        counters = self.stats.counters
        counters.snapshots, counters.snapshots_skipped = snapshots.written, snapshots.skipped_low_disk
        counters.snapshot_failures = snapshots.failed

    # -------------------------------------------------------- periodic work
    def disk_low(self, free: int) -> None:
        store = self.store
        try:
            if store is not None:
                store.commit()  # whatever is already batched goes in while there is room
        except sqlite3.Error:
            self._drop_batch(store)  # the disk filled first: warned about just below
        self._disk_warning(
            "disk: only %.0f MB free under %s (store.min_free_mb %.0f): results are not being written; "
            "classification goes on and writing resumes when space returns",
            free / 1024 / 1024,
            self.config.state_path,
            self.config.store.min_free_mb,
        )

    def retention_failed(self, exc: sqlite3.Error) -> None:
        """Retention commits the batch first: a commit that failed there lost its frames."""
        lost = self._drop_batch(self.store) if self.store is not None else 0
        self._store_warning("store: retention failed: %s; %d uncommitted frames lost", exc, lost)

    def write_status(self, status: dict[str, Any]) -> None:
        try:
            write_json_atomic(self.config.status_path, status)
        except OSError as exc:
            self.stats.counters.status_failures += 1
            self._status_warning("status: cannot write %s: %s", self.config.status_path, exc)

    # ------------------------------------------------------------- the end
    def finish(self, closed: Sequence[ClosedCell], exit_reason: str) -> None:
        """The cells still followed end with the run; the run row is closed and committed."""
        closed = self.crops.link(closed)
        self.stats.add_closed(closed)
        store = self.store
        if store is not None:
            try:
                store.add_cells(closed)
                store.end_run(exit_reason)
            except sqlite3.Error as exc:
                log.error("store: final commit failed: %s; %d uncommitted frames lost", exc, self._drop_batch(store))
            finally:
                store.close_quietly()
        self.stats.counters.snapshots = self.snapshots.written
