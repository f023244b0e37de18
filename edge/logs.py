"""The service's log: one line per event on stderr, journald priorities under systemd, and
warnings that repeat (disk low, store errors) rate-limited."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

WARNING_INTERVAL_S = 60.0  # repeated warnings (disk low, store errors) at most this often
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

log = logging.getLogger("metascope")


def setup_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr. Under systemd (JOURNAL_STREAM set) each line starts with
    the syslog priority as <N>, which journald turns into the entry's priority, and carries no
    time stamp (the journal adds one)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>{record.getMessage()}"


class RateLimitedWarning:
    """A warning logged at most once per interval, saying how many were held back."""

    def __init__(self, interval_s: float = WARNING_INTERVAL_S):
        self.interval_s = interval_s
        self._last = float("-inf")
        self.suppressed = 0

    def __call__(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            suffix = f" ({self.suppressed} more since the last such warning)" if self.suppressed else ""
            log.warning(message + suffix, *args)
            self._last, self.suppressed = now, 0
        else:
            self.suppressed += 1
