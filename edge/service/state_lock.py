"""One service per state directory: an exclusive lock on the state directory itself for the run's life.

Two `metascope run`s on one database dropped 46 % of the frames and made status.json flip
between them. flock(2) is released by the kernel when the process dies, so a killed service
never leaves a stale lock behind. The lock is taken on the directory, not on a file in it: a
lock file can be deleted under a running service, and the next run then locked a new file and
started on the same database; a directory holding the database cannot be removed. STATE/metascope.lock
only names the holder's PID for the message; it is opened without following links (a link
planted there had its target truncated) and must be a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from edge.errors import EnvironmentProblem

LOCK_NAME = "metascope.lock"


class StateLock:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise EnvironmentProblem naming the process that has it."""
        fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EnvironmentProblem(
                f"state directory {self.state_dir} is already in use by process {self._owner()} (another "
                "`metascope run`: systemctl status metascope); stop it first or give another --state-dir"
            ) from None
        self._fd = fd
        try:
            self._write_pid()
        except EnvironmentProblem:
            self.release()
            raise

    def _write_pid(self) -> None:
        """Write this PID to the lock file: a full disk must not stop the run, a link or a
        non-file there must (something is wrong with the state directory)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return
            raise EnvironmentProblem(self._refusal(exc)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise EnvironmentProblem(
                    f"{self.path} is not a regular file: remove it; metascope writes its PID there"
                )
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def _refusal(self, exc: OSError) -> str:
        if os.path.islink(self.path):
            return (
                f"{self.path} is a symbolic link (to {os.readlink(self.path)}): metascope will not write through "
                "it; remove the link"
            )
        return f"state directory {self.state_dir}: cannot write {LOCK_NAME}: {exc.strerror or exc}"

    def _owner(self) -> str:
        """The holder's PID as its lock file says, or "unknown" (deleted, unreadable, a link)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return "unknown"
        try:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
