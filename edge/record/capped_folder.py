"""A folder of files under a size cap (oldest deleted first) and a free-disk floor: what
snapshots and cell crops share. Writing never stops a run: a disk that is too full, or that
refuses the write or the clean-up (read-only, the folder replaced by a file), costs the file and
is counted."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge.paths import nearest_existing
from edge.record.times import iso_utc


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
        existing = sorted(path for path in self.folder.glob(f"*{suffix}") if path.is_file())
        self._files: deque[tuple[Path, int]] = deque((path, path.stat().st_size) for path in existing)
        self.total_bytes = sum(size for _, size in self._files)

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
        self._files.append((path, len(data)))
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
        while self._files and self.total_bytes + size > self.cap_bytes:
            oldest, oldest_size = self._files[0]
            try:
                oldest.unlink(missing_ok=True)
            except OSError as exc:
                self.failed += 1
                self.last_error = f"cannot delete {oldest} to make room: {exc}"
                return False
            self._files.popleft()
            self.total_bytes -= oldest_size
        return True


def time_stamp_name(captured_at: float) -> str:
    """A capture time as the start of a file name that sorts in time order."""
    return iso_utc(captured_at).replace(":", "").replace("-", "").replace(".", "_")
