"""The exit statuses deploy/pull_merge.py and its modules end with, and the one error that carries
them. Copies of edge/errors.py ExitCode, by name (tests/test_exit_codes.py holds them to it):
these files run under the desktop's system python3, where edge may not be importable."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_FAILED, EXIT_USAGE, EXIT_BAD_EXPORT, EXIT_PULL_TARGET_UNUSABLE = 1, 2, 9, 12


class PullError(Exception):
    """A pull that cannot go on: the message names what is wrong, ``code`` is the exit status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def exit_status(
    run: Callable[[list[str]], object], argv: list[str], store_errors: type[Exception] | tuple, store: str, work: str
) -> int:
    """``run(argv)`` with each way a pull ends as its exit status and one line naming the cause:
    a PullError's own code; a failure of the ``store`` (its driver's ``store_errors``) or of the
    ``work`` folder (OSError) as a pull target that cannot be used."""
    try:
        run(argv)
    except PullError as exc:
        print(f"pull.sh: {exc}", file=sys.stderr)
        return exc.code
    except store_errors as exc:
        print(f"pull.sh: {store} cannot be used: {exc}", file=sys.stderr)
        return EXIT_PULL_TARGET_UNUSABLE
    except OSError as exc:
        print(f"pull.sh: {work} cannot be used: {exc}", file=sys.stderr)
        return EXIT_PULL_TARGET_UNUSABLE
    return 0
