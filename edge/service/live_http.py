"""The live view's HTTP side: a threaded server on a unix socket (nothing listens on the
network; `metascope live HOST` forwards it over ssh) and its routes:

    GET /             the page (edge/service/live_page.py)
    GET /frame.jpg    the newest annotated frame; ?after=N waits (briefly) for a newer one
    GET /stream.mjpg  the annotated frames as an MJPEG stream, at the client's pace
    GET /status.json  the run's figures, the newest frame's, recent warnings and the clients

Each connection has its own thread, and every send on it is bounded (SEND_TIMEOUT_S for the
whole of one send): a client that stops reading holds only its own thread, and only that long.
At most MAX_CLIENTS connections at once; the next ones are told 503 and closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edge.service.live_feed import LiveFeed, iso_utc
from edge.service.live_page import render_page

MAX_CLIENTS = 8  # connections at once (a page holds two at most: a frame and the status)
SEND_TIMEOUT_S = 5.0  # one send (a frame, a page) may take this long, then the client is dropped
UNIX_PATH_MAX = 107  # bytes of a unix socket's path (sun_path holds 108 with the final NUL)
FRAME_WAIT_S = 2.0  # /frame.jpg?after=N waits this long for a frame newer than N
CLIENT_NICE = 10  # client threads run this much nicer than the loop
BOUNDARY = "metascope-frame"
CLIENT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\n\r\ntoo many clients\n"


class LiveSocketError(Exception):
    """The socket cannot be made (too long a path, another server on it, not a socket)."""


def claim_socket_path(path: Path) -> None:
    """Make room for binding ``path``: a socket left by a killed run is removed; one that
    answers (another run serves it), or a file that is not a socket, is left alone and refused."""
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise LiveSocketError(f"{path} is {size} bytes long, over the {UNIX_PATH_MAX} a unix socket path may have")
    if not path.is_socket():
        if path.exists() or path.is_symlink():
            raise LiveSocketError(f"{path} exists and is not a socket: left alone")
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nothing behind it: left by a run that was killed
        return
    except OSError as exc:
        raise LiveSocketError(f"{path}: {exc}") from None
    finally:
        probe.close()
    raise LiveSocketError(f"{path}: another process serves a live view on it (a second run?)")


class LiveServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True  # a thread stuck on a client never holds the process up
    block_on_close = False
    request_queue_size = MAX_CLIENTS

    def __init__(self, path: Path, feed: LiveFeed, title: str, max_clients: int, send_timeout_s: float):
        self.feed, self.title = feed, title
        self.max_clients, self.send_timeout_s = max_clients, send_timeout_s
        self.refused = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._inode = 0
        super().__init__(str(path), LiveHandler, bind_and_activate=False)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def server_bind(self) -> None:
        path = Path(self.server_address)
        claim_socket_path(path)
        self.socket.bind(str(path))
        self._inode = path.stat().st_ino
        # After bind: the unit's UMask 0027 leaves the group without write, and connecting to a
        # unix socket needs write. The login user reaches it through the metascope group.
        os.chmod(path, 0o660)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._open) >= self.max_clients
            if not full:
                self._open.add(request)
        if full:
            self.refused += 1
            try:
                request.setblocking(False)
                request.send(BUSY)
            except OSError:
                pass
            super().shutdown_request(request)
            return
        request.settimeout(self.send_timeout_s)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def connections(self) -> int:
        with self._lock:
            return len(self._open)

    def close_connections(self) -> None:
        """Wake every client thread (one blocked in a send gets an error and ends)."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def remove_socket(self) -> None:
        """Remove the socket file, unless another process has replaced it since."""
        path = Path(self.server_address)
        try:
            if path.stat().st_ino == self._inode:
                path.unlink()
        except OSError:
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        from edge.logs import log

        log.exception("live view: a request failed")


class LiveHandler(BaseHTTPRequestHandler):
    server: LiveServer
    server_version = "metascope-live"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request a connection: nothing idles in a kept-alive thread

    def setup(self) -> None:
        super().setup()
        _yield_to_the_loop()

    def version_string(self) -> str:
        return self.server_version

    def address_string(self) -> str:
        return "local"  # a unix socket has no peer address

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are no journal lines

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = ROUTES.get(url.path)
        try:
            if route is None:
                self.reply(404, "text/plain; charset=utf-8", b"not found: try /\n")
            else:
                route(self, parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client left, or stopped reading for SEND_TIMEOUT_S: its thread ends here

    def reply(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def page(self, _query: dict[str, list[str]]) -> None:
        self.server.feed.asked()
        self.reply(200, "text/html; charset=utf-8", render_page(self.server.title).encode())

    def frame(self, query: dict[str, list[str]]) -> None:
        after = _whole(query, "after")
        client = query.get("client", [""])[0]
        if after is None or len(client) > 40 or not set(client) <= CLIENT_ID_CHARS:
            self.reply(400, "text/plain; charset=utf-8", b"after: a whole number; client: letters and digits\n")
            return
        feed = self.server.feed
        watcher = feed.clients.watcher("page", client or "anonymous")
        taken = feed.next_frame(watcher, after, FRAME_WAIT_S)
        if taken is None:
            self.reply(503, "text/plain; charset=utf-8", b"no new frame yet\n", {"Retry-After": "1"})
            return
        number, result = taken
        self.reply(200, "image/jpeg", feed.jpeg(number, result), {"X-Frame": str(number)})

    def stream(self, _query: dict[str, list[str]]) -> None:
        feed = self.server.feed
        watcher = feed.clients.watcher("stream")
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        why = "server stopped"
        try:
            after = 0
            while not feed.stopping:
                taken = feed.next_frame(watcher, after, 1.0)
                if taken is None:
                    continue
                after, result = taken
                jpeg = feed.jpeg(after, result)
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                self.wfile.write(f"{head}X-Frame: {after}\r\n\r\n".encode() + jpeg + b"\r\n")
        except TimeoutError:
            why = f"stopped reading (a send took over {self.server.send_timeout_s:g} s)"
            raise
        except OSError:
            why = "disconnected"
            raise
        finally:
            feed.clients.end(watcher, feed.newest, why)

    def status(self, _query: dict[str, list[str]]) -> None:
        feed, server = self.server.feed, self.server
        report = {
            "updated_at": iso_utc(time.time()),
            "run": feed.run_status(),
            "frame": feed.frame_report(),
            "warnings": list(feed.warnings.lines),
            "live": {
                "socket": str(server.server_address),
                "connections": server.connections(),
                "max_clients": server.max_clients,
                "refused": server.refused,
                "max_fps": feed.max_fps,
                "clients": feed.clients.report(feed.newest),
            },
        }
        self.reply(200, "application/json", json.dumps(report, indent=1, default=str).encode())


ROUTES = {"/": LiveHandler.page, "/frame.jpg": LiveHandler.frame, "/stream.mjpg": LiveHandler.stream,
          "/status.json": LiveHandler.status}  # fmt: skip


def _yield_to_the_loop() -> None:
    """Lower this client thread's priority (Linux: nice applies to one thread): on a busy Pi the
    watcher gets the frames the spare CPU can draw, the loop keeps its time. Raising one's own
    nice needs no privilege; where it is refused, the thread simply keeps the process's."""
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + CLIENT_NICE, 19))


def _whole(query: dict[str, list[str]], name: str) -> int | None:
    text = query.get(name, ["0"])[0]
    return int(text) if text.isdigit() and len(text) < 19 else None
