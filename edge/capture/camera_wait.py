"""Recovering from a camera without giving up: what `metascope run` does before the frame loop.

A busy camera (someone focusing with rpicam-hello) or a missing one (a cable being reseated) is
waited for inside the process, trying again with a growing pause (5 s up to 5 min), for as long
as it takes: exiting would spend systemd's start limit and leave the unit failed for good. A
run that ended with a camera failure (exit 3: a stall, a camera that needs a reboot) makes the
next start wait before opening the camera, with the same growing pause, so restarts back off
too (systemd 252, Bookworm's, has no RestartSteps= or RestartMaxDelaySec=; they came in 254).

Before READY=1 the wait would run into the unit's TimeoutStartSec, so each pause sends
EXTEND_TIMEOUT_USEC (systemd >= 236) and a STATUS= line for `systemctl status`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from edge.capture.base import FrameSource
from edge.capture.camera_setup import CameraUnavailable
from edge.logs import log
from edge.notify import Notifier
from edge.paths import write_json_atomic

BACKOFF_S = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)  # then every 300 s
RESTARTS_NAME = "camera-restarts.json"
STOP_CHECK_S = 0.2
TIMEOUT_MARGIN_S = 30.0  # EXTEND_TIMEOUT_USEC covers the pause plus one attempt to open
HEALTHY_RUN_S = 600.0  # a run this long before its camera failed starts the count again


def backoff_s(attempt: int) -> float:
    """The pause before try number ``attempt`` + 1 (attempt 0 is the first pause)."""
    return BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]


class CameraRestarts:
    """How many runs in a row ended with a camera failure, kept in the state directory."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / RESTARTS_NAME

    def failures(self) -> int:
        try:
            count = json.loads(self.path.read_text()).get("camera_failures_in_a_row", 0)
        except (OSError, ValueError, AttributeError):
            return 0  # no file (the usual case) or an unreadable one: no back-off
        return count if isinstance(count, int) and count > 0 else 0

    def record(self, camera_failed: bool, ran_s: float) -> None:
        """After a run: one more failure in a row, the first of a new series (the camera had
        worked for HEALTHY_RUN_S), or none (the run ended some other way)."""
        count = 0
        if camera_failed:
            count = 1 if ran_s >= HEALTHY_RUN_S else self.failures() + 1
        try:
            if count or self.path.exists():
                write_json_atomic(self.path, {"camera_failures_in_a_row": count, "at": time.time()})
        except OSError as exc:  # a full disk must not turn into a crash here
            log.warning("camera: cannot record the restart count in %s: %s", self.path, exc)


class CameraWaiter:
    """Pauses that a stop request cuts short, announced to systemd."""

    def __init__(self, notifier: Notifier, should_stop: Callable[[], bool]):
        self.notifier = notifier
        self.should_stop = should_stop

    def pause(self, seconds: float, status: str) -> bool:
        """Wait ``seconds``; False when asked to stop meanwhile."""
        self.notifier.send(f"EXTEND_TIMEOUT_USEC={int((seconds + TIMEOUT_MARGIN_S) * 1_000_000)}")
        self.notifier.status(status)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.should_stop():
                return False
            time.sleep(min(left, STOP_CHECK_S))
        return not self.should_stop()

    def back_off_after_failed_runs(self, failures: int) -> bool:
        """After ``failures`` runs in a row ended by the camera: wait before opening it again."""
        if failures <= 0:
            return True
        pause = backoff_s(failures - 1)
        log.warning(
            "camera: the last %d run(s) ended with a camera failure; waiting %.0f s before opening it again "
            "(the pause grows to %.0f s while it keeps failing)",
            failures,
            pause,
            BACKOFF_S[-1],
        )
        return self.pause(pause, f"waiting {pause:.0f} s before reopening the camera ({failures} failed runs)")

    def open(self, source: FrameSource) -> bool:
        """Open the source, waiting out a busy or missing camera for as long as it takes; False
        when asked to stop first. Other failures (SourceError) propagate."""
        attempt, started, last_kind = 0, time.monotonic(), None
        while True:
            try:
                source.open()
            except CameraUnavailable as exc:
                pause = backoff_s(attempt)
                kind = type(exc).__name__
                if kind != last_kind:  # one line per kind of trouble, not one per try
                    log.error(
                        "camera: %s. Waiting for it: trying again in %.0f s, then less often (every %.0f s at "
                        "most); the service never gives up on a busy or missing camera",
                        exc,
                        pause,
                        BACKOFF_S[-1],
                    )
                    last_kind = kind
                attempt += 1
                if not self.pause(pause, f"waiting for the camera ({exc})"[:200]):
                    return False
                continue
            if attempt:
                log.info("camera: open after %d tries (%.0f s)", attempt + 1, time.monotonic() - started)
            return True
