"""The live view's hand-off between the loop and the people watching it.

The loop calls ``publish`` once a frame (its observer): a reference to the newest result and a
sequence number under a lock, and, only while someone has asked for anything in the last
WATCHED_FOR_S, a fresh copy of the run's status at most every STATUS_EVERY_S. Everything else
(drawing, JPEG, the focus score) happens in the clients' threads, for the frame a client takes,
once per frame however many take it, and at most at LIVE_MAX_FPS per client: nobody watching
costs the loop nothing, and a slow client only gets fewer frames (each one it missed counted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.logs import RateLimitedWarning

LIVE_MAX_FPS = 10.0  # frames a second one client is sent at most (enough to focus by, cheap on a Pi)
LIVE_JPEG_QUALITY = 80
WATCHED_FOR_S = 5.0  # after the last request the loop keeps the status fresh this long
STATUS_EVERY_S = 0.25  # how often the loop copies the run's status while watched
STATUS_WAIT_S = 1.0  # a status request after a quiet spell waits this long for the loop's next copy
REMEMBERED_CLIENTS = 32  # clients listed in status.json (the connected ones and the latest gone)
RECENT_WARNINGS = 20


def iso_utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass
class Watcher:
    """One client: a stream connection, or a page polling frames under its own id."""

    id: str
    kind: str  # "stream" (/stream.mjpg) or "page" (/frame.jpg polled by the page)
    since: float = field(default_factory=time.time)
    frames_sent: int = 0
    frames_dropped: int = 0  # frames the loop made that this client did not get
    last_frame: int = 0  # the sequence number of the last frame it took
    last_sent_at: float = float("-inf")  # monotonic
    last_seen_at: float = field(default_factory=time.monotonic)
    ended: str = ""  # why a stream ended ("" while connected)

    def took(self, number: int) -> None:
        if self.last_frame:
            self.frames_dropped += max(0, number - self.last_frame - 1)
        self.last_frame = number
        self.frames_sent += 1
        self.last_sent_at = self.last_seen_at = time.monotonic()

    def report(self, newest: int) -> dict[str, Any]:
        # A stream that is still connected is missing every frame newer than the one it is being
        # sent but the next: counted as they happen, so a stuck client's count grows while it hangs.
        waiting = max(0, newest - self.last_frame - 1) if self.kind == "stream" and not self.ended else 0
        return {
            "id": self.id,
            "kind": self.kind,
            "since": iso_utc(self.since),
            "frames_sent": self.frames_sent,
            "frames_dropped": self.frames_dropped + (waiting if self.last_frame else 0),
            "ended": self.ended or None,
        }


class ClientBook:
    """The clients status.json lists: bounded, the longest-quiet forgotten first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: OrderedDict[str, Watcher] = OrderedDict()
        self._streams = 0

    def watcher(self, kind: str, client_id: str = "") -> Watcher:
        with self._lock:
            if kind == "stream":
                self._streams += 1
                client_id = f"stream-{self._streams}"
            found = self._watchers.get(client_id)
            if found is None or found.kind != kind:
                found = self._watchers[client_id] = Watcher(client_id, kind)
            self._watchers.move_to_end(client_id)
            found.last_seen_at = time.monotonic()
            while len(self._watchers) > REMEMBERED_CLIENTS:
                self._watchers.popitem(last=False)
            return found

    def end(self, watcher: Watcher, newest: int, why: str) -> None:
        with self._lock:
            watcher.frames_dropped = watcher.report(newest)["frames_dropped"]
            watcher.ended = why

    def report(self, newest: int) -> list[dict[str, Any]]:
        with self._lock:
            return [watcher.report(newest) for watcher in self._watchers.values()]


class RecentWarnings(logging.Handler):
    """The service's last warnings (they go to the journal as well), for the page."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: deque[dict[str, str]] = deque(maxlen=RECENT_WARNINGS)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"at": iso_utc(record.created), "level": record.levelname, "message": record.getMessage()})


class LiveFeed:
    """The newest frame and the run's status, handed from the loop's thread to the clients'."""

    def __init__(self, status: Callable[[], dict[str, Any]] | None = None, max_fps: float = LIVE_MAX_FPS):
        self.status_source = status  # called in the loop's thread only
        self.max_fps = max_fps
        self.clients = ClientBook()
        self.warnings = RecentWarnings()
        self._status_warning = RateLimitedWarning()
        self.stopping = False
        self._changed = threading.Condition()
        self._result: Any = None
        self._number = 0
        self._status: dict[str, Any] = {}
        self._status_at = float("-inf")
        self._asked_at = float("-inf")
        self._made = threading.Lock()
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._figures: tuple[int, dict[str, Any]] = (0, {})

    # ------------------------------------------------------------ the loop
    def publish(self, result: Any) -> None:
        now = time.monotonic()
        watched = now - self._asked_at < WATCHED_FOR_S
        status = None
        if watched and self.status_source is not None and now - self._status_at >= STATUS_EVERY_S:
            status = self._copy_status()
        with self._changed:
            self._result, self._number = result, self._number + 1
            if status is not None:
                self._status, self._status_at = status, now
            if watched:
                self._changed.notify_all()

    def _copy_status(self) -> dict[str, Any]:
        try:
            return self.status_source()
        except Exception as exc:  # the live view must never stop the loop it watches
            self._status_warning("live view: the run's status could not be read: %s: %s", type(exc).__name__, exc)
            return {"error": f"{type(exc).__name__}: {exc}"}

    # --------------------------------------------------------- the clients
    def asked(self) -> None:
        self._asked_at = time.monotonic()

    def stop(self) -> None:
        with self._changed:
            self.stopping = True
            self._changed.notify_all()

    def next_frame(self, watcher: Watcher, after: int, wait_s: float) -> tuple[int, Any] | None:
        """The newest frame after number ``after``, once the client's pace allows: waits up to
        ``wait_s`` for one; None when none came or the view is stopping."""
        self.asked()
        if after > self._number:
            after = 0  # numbered by an earlier run (the service restarted): any frame is newer
        pause = watcher.last_sent_at + 1.0 / self.max_fps - time.monotonic()
        with self._changed:
            if pause > 0:
                self._changed.wait_for(lambda: self.stopping, pause)
            self._changed.wait_for(lambda: self._number > after or self.stopping, wait_s)
            if self.stopping or self._number <= after:
                return None
            number, result = self._number, self._result
        watcher.took(number)
        return number, result

    @property
    def newest(self) -> int:
        return self._number

    def jpeg(self, number: int, result: Any) -> bytes:
        """The frame drawn as the snapshots are, encoded once however many clients take it."""
        from edge.record.snapshots import annotated_jpeg

        with self._made:
            if self._jpeg[0] != number:
                self._jpeg = (number, annotated_jpeg(result, LIVE_JPEG_QUALITY))
            return self._jpeg[1]

    def frame_report(self) -> dict[str, Any] | None:
        """The newest frame's facts and figures (focus score, grey level, clipping), measured once a frame."""
        from edge.capture.frame_figures import frame_figures

        number, result = self._number, self._result
        if result is None:
            return None
        with self._made:
            if self._figures[0] != number:
                found = frame_figures(result.frame.pixels)
                rounded = {"focus": round(found.sharpness, 1), "mean_grey": round(found.mean_grey, 1),
                           "clipped": round(found.clipped, 5)}  # fmt: skip
                self._figures = (number, rounded)
            figures = self._figures[1]
        frame = result.frame
        height, width = frame.pixels.shape
        return {
            "number": number,
            "index": frame.index,
            "captured_at": iso_utc(frame.captured_at),
            "age_s": round(max(time.time() - frame.captured_at, 0.0), 3),
            "width": width,
            "height": height,
            "detections": len(result.detections),
            "views": result.views,
            "positives": result.positives,
            "clusters": result.clusters,
            **figures,
        }

    def run_status(self) -> dict[str, Any]:
        """The loop's latest copy of the run's status; after a quiet spell, waits briefly for a fresh one."""
        asked = time.monotonic()
        self.asked()
        with self._changed:
            if asked - self._status_at > 2 * STATUS_EVERY_S and self.status_source is not None:
                self._changed.wait_for(lambda: self._status_at >= asked or self.stopping, STATUS_WAIT_S)
            return self._status
