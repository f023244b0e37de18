"""systemd's notify protocol, written to $NOTIFY_SOCKET directly (no library needed).

READY=1 once the model and camera are up, WATCHDOG=1 from every turn of the loop (a turn with
a failed or stalled capture too) but at most once a second, STOPPING=1 at shutdown, STATUS= for
`systemctl status`. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("metascope")

# WATCHDOG=1 at most this often: a fast loop (replay, synthetic) would otherwise fill the notify
# socket's queue, and a message that does not fit is dropped (STOPPING=1 too). Fixed rather than
# half the watchdog period, so the longest gap between pings is this plus one loop turn.
WATCHDOG_MIN_INTERVAL_S = 1.0


class Notifier:
    def __init__(self, address: str | None = None, watchdog_usec: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address = address or None
        self._socket: socket.socket | None = None
        usec = os.environ.get("WATCHDOG_USEC") if watchdog_usec is None else watchdog_usec
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        enabled = bool(usec) and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        # systemd's WatchdogSec for this process, or None when no watchdog is asked for
        self.watchdog_period_s = int(usec) / 1_000_000 if enabled and usec and usec.isdigit() else None
        self._last_watchdog = float("-inf")
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the frame loop: if the listener's queue is full, this message is dropped.
            self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self.address)
            return True
        except OSError as exc:
            if not self._warned:  # systemd went away or the socket is wrong: say so once, carry on
                log.warning("notify: cannot send to NOTIFY_SOCKET %r: %s", self.address, exc)
                self._warned = True
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self, now: float | None = None) -> bool:
        """WATCHDOG=1, unless one went out less than WATCHDOG_MIN_INTERVAL_S ago."""
        now = time.monotonic() if now is None else now
        if now - self._last_watchdog < WATCHDOG_MIN_INTERVAL_S:
            return False
        self._last_watchdog = now
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
