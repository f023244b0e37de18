"""The live view: what a rig sees, served over HTTP on a unix socket while `metascope run` (or
`doctor --capture N --live`) works, for `metascope live HOST` to forward over ssh.

``LiveView`` is all its owner touches: ``start`` (a socket that cannot be made is a warning and
the run goes on without it), ``publish`` (the loop's observer, cheap: edge/service/live_feed.py)
and ``stop`` (prompt, whatever the clients do: well inside the unit's TimeoutStopSec).
The HTTP side is edge/service/live_http.py, the page edge/service/live_page.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.logs import log
from edge.service.live_feed import LIVE_MAX_FPS, LiveFeed
from edge.service.live_http import MAX_CLIENTS, SEND_TIMEOUT_S, LiveServer, LiveSocketError

if TYPE_CHECKING:
    from edge.service.loop import Service

POLL_INTERVAL_S = 0.1  # how soon the server's accept loop sees a stop
STOP_JOIN_S = 1.0


class LiveView:
    def __init__(
        self,
        path: Path,
        title: str,
        status: Callable[[], dict[str, Any]] | None = None,
        *,
        max_clients: int = MAX_CLIENTS,
        send_timeout_s: float = SEND_TIMEOUT_S,
        max_fps: float = LIVE_MAX_FPS,
    ):
        self.path = Path(path)
        self.title = title
        self.feed = LiveFeed(status, max_fps)
        self.max_clients, self.send_timeout_s = max_clients, send_timeout_s
        self.server: LiveServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        return self.server is not None

    def start(self) -> bool:
        """Serve on ``path``; False (and a warning saying why) when the socket cannot be made."""
        try:
            server = LiveServer(self.path, self.feed, self.title, self.max_clients, self.send_timeout_s)
        except (LiveSocketError, OSError) as exc:
            log.warning("live view: cannot serve on %s (%s); going on without it", self.path, exc)
            return False
        self.server = server
        log.addHandler(self.feed.warnings)
        self._thread = threading.Thread(
            target=server.serve_forever, args=(POLL_INTERVAL_S,), name="live-view", daemon=True
        )
        self._thread.start()
        log.info("live view: %s (on a desktop: metascope live HOST)", self.path)
        return True

    def publish(self, result: Any) -> None:
        self.feed.publish(result)

    def stop(self) -> None:
        server = self.server
        if server is None:
            return
        self.server = None
        log.removeHandler(self.feed.warnings)
        self.feed.stop()
        server.shutdown()  # the accept loop ends within POLL_INTERVAL_S
        server.close_connections()
        server.server_close()
        server.remove_socket()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_S)

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def run_status(service: Service) -> Callable[[], dict[str, Any]]:
    """What the page shows of a run: status.json's content and the camera's settings, requested
    and applied. Called in the loop's thread only."""
    requested = service.config.as_dict()["camera"]

    def status() -> dict[str, Any]:
        figures = service.status("running")
        applied = getattr(service.source, "applied", None)
        if applied:
            figures["camera"] = {"applied": dict(applied), "requested": requested}
        return figures

    return status
