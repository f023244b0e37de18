"""The exit statuses deploy/pull_merge.py and its modules end with, and the one error that carries
them. Copies of edge/errors.py ExitCode, by name (tests/test_exit_codes.py holds them to it):
these files run under the desktop's system python3, where edge may not be importable."""

from __future__ import annotations

EXIT_FAILED, EXIT_USAGE, EXIT_BAD_EXPORT, EXIT_PULL_TARGET_UNUSABLE = 1, 2, 9, 12


class PullError(Exception):
    """A pull that cannot go on: the message names what is wrong, ``code`` is the exit status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
