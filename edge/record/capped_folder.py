"""A folder of files under a size cap (oldest deleted first) and a free-disk floor: what
snapshots and cell crops share. Writing never stops a run: a disk that is too full, or that
refuses the write or the clean-up (read-only, the folder replaced by a file), costs the file and
is counted."""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge.paths import nearest_existing
from edge.record.times import iso_utc

OLDEST_BATCH = 1024  # files read from the folder at a time as the next to delete (about 150 kB held)


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free space for unprivileged writers on the filesystem that holds (or will hold) ``path``:
    a folder not made yet is measured at its nearest existing parent."""
    return shutil.disk_usage(nearest_existing(path)).free


class CappedFolder:
    """Files named so that name order is age order (they start with a capture time), whose
    total stays under ``max_mb``; nothing is written while free disk is under ``min_free_mb``.
    The folder is made at the first write: a full disk at start must not stop the run."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        suffix: str,
        max_mb: float,
        min_free_mb: float,
        free_space: Callable[[Path], int] = free_bytes,
    ):
        self.folder = Path(folder)
        self.suffix = suffix
        self.cap_bytes = int(max_mb * 1024 * 1024)
        self.min_free_bytes = min_free_mb * 1024 * 1024
        self.free_space = free_space
        self.written = 0
        self.skipped_low_disk = 0
        self.failed = 0  # could not be written (the disk refused)
        self.last_error = ""
        self.total_bytes = sum(path.stat().st_size for path in self.folder.glob(f"*{suffix}") if path.is_file())
        # The next files to delete, oldest first: a batch read from the folder when needed, never a
        # list of every file written (at 4 crops a frame that list grew without bound under the cap).
        self._oldest: deque[tuple[str, int]] = deque()

    def disk_ok(self) -> bool:
        return self.free_space(self.folder) >= self.min_free_bytes

    def write(self, name: str, data: bytes) -> str | None:
        """Save ``data`` as ``name`` (deleting the oldest files to make room under the cap);
        None, and counted, when the disk is too full, the file alone is over the cap, or the
        disk refuses the write (``failed``, ``last_error``)."""
        if not self.disk_ok():
            self.skipped_low_disk += 1
            return None
        if len(data) > self.cap_bytes:
            return None
        if not self._make_room(len(data)):
            return None
        path = self.folder / name
        temporary = path.with_name(path.name + ".tmp")
        try:
            self._make_folder()
            temporary.write_bytes(data)
            os.replace(temporary, path)  # never a half-written file under the real name
        except OSError as exc:  # disk full, read-only, EIO, no inodes: a lost file, not a lost run
            with contextlib.suppress(OSError):  # the folder may be gone or a file now (ENOTDIR)
                temporary.unlink(missing_ok=True)
            self.failed += 1
            self.last_error = f"cannot write {path}: {exc}"
            return None
        self.total_bytes += len(data)
        self.written += 1
        return name

    def _make_folder(self) -> None:
        """The folder, made again if someone deleted it; a file in its place is ENOTDIR (mkdir's
        own "File exists" would not say what is wrong)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.folder)) from None

    def _make_room(self, size: int) -> bool:
        """Delete the oldest files until ``size`` more bytes fit under the cap. A file that cannot
        be deleted (the folder went read-only, or was replaced by a file) stays counted, and the
        new one is not written: counted as failed, tried again at the next write."""
        while self.total_bytes + size > self.cap_bytes:
            try:
                if not self._oldest and not self._read_oldest():
                    self.total_bytes = 0  # nothing left to delete: someone else emptied the folder
                    return True
                name, oldest_size = self._oldest[0]
                (self.folder / name).unlink(missing_ok=True)
            except OSError as exc:
                self.failed += 1
                self.last_error = f"cannot delete the oldest files in {self.folder} to make room: {exc}"
                return False
            self._oldest.popleft()
            self.total_bytes -= oldest_size
        return True

    def _read_oldest(self) -> bool:
        """Fill ``_oldest`` with the OLDEST_BATCH first names in the folder and their sizes;
        False when it holds none."""
        try:
            with os.scandir(self.folder) as entries:
                names = heapq.nsmallest(OLDEST_BATCH, (e.name for e in entries if e.name.endswith(self.suffix)))
        except FileNotFoundError:
            return False  # no folder, nothing to delete: the write makes it again
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self._oldest.append((name, (self.folder / name).stat().st_size))
        return bool(self._oldest)


def time_stamp_name(captured_at: float) -> str:
    """A capture time as the start of a file name that sorts in time order."""
    return iso_utc(captured_at).replace(":", "").replace("-", "").replace(".", "_")
