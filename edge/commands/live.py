"""`metascope live HOST`: watch a rig from this machine's browser. The rig serves its live view on
a unix socket only (nothing listens on its network); this asks the rig where the socket is
(`metascope status --json` over ssh), forwards it to a port on this machine's loopback
(`ssh -N -L 127.0.0.1:PORT:SOCKET HOST`, with your ssh config, as deploy/pull.sh uses it), checks
that something answers there and prints the URL. Ctrl-C ends the forward (exit 0).

--doctor reaches `metascope doctor --capture N --live` instead: the same page while doctor holds
the camera, with the service stopped. Exit status: 0 ended by Ctrl-C; 1 the rig could not be
reached, nothing serves on its socket, or the connection was lost; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edge.commands.common import CommandError, UsageError, positive_int
from edge.paths import LIVE_SOCKET_NAME

# As deploy/ssh_common.sh: the user's options first (ssh keeps the first value it sees), then a
# connect timeout so a dead network fails fast instead of hanging.
SSH_DEFAULTS = ("-o", "ConnectTimeout=15")
# A non-interactive ssh session's PATH does not include the venv, hence the fallback (as pull.sh).
DEFAULT_REMOTE = '"$(command -v metascope || echo /opt/metascope/venv/bin/metascope)"'
FORWARD_WAIT_S = 40.0  # ssh's connect timeout and login, with a margin
ANSWER_TRIES = 3  # requests through a fresh forward before "nothing serves there"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "live",
        help="watch a rig live in this machine's browser (its live view forwarded over ssh)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("host", metavar="HOST", help="the rig, as ssh knows it (an alias, name, or user@host)")
    parser.add_argument("--doctor", action="store_true", help="reach `doctor --capture N --live`, not the service")
    parser.add_argument("--socket", metavar="PATH", help="the live view's socket on HOST (default: what status names)")
    parser.add_argument("--port", type=positive_int, help="the local port (default: a free one)")
    parser.add_argument("--open", action="store_true", help="open the page in this machine's browser")
    parser.add_argument(
        "--remote-command",
        default=os.environ.get("METASCOPE_REMOTE_COMMAND", ""),
        metavar="CMD",
        help="the metascope command on HOST, as a shell command (default: $METASCOPE_REMOTE_COMMAND, else "
        "metascope on HOST's PATH, else /opt/metascope/venv/bin/metascope)",
    )
    parser.add_argument(
        "--remote-config",
        default=os.environ.get("METASCOPE_REMOTE_CONFIG", ""),
        metavar="PATH",
        help="the config file metascope reads on HOST (default: $METASCOPE_REMOTE_CONFIG, else its own)",
    )
    parser.add_argument("-F", dest="ssh_config", metavar="FILE", help="ssh config file (passed to ssh)")
    parser.add_argument("-o", dest="ssh_options", action="append", default=[], metavar="OPTION",
                        help="ssh option, e.g. -o Port=2222 (repeatable; passed to ssh)")  # fmt: skip
    parser.add_argument("-i", dest="identity", metavar="FILE", help="ssh identity file (passed to ssh)")
    parser.add_argument("-p", dest="ssh_port", metavar="PORT", help="ssh port (passed to ssh)")
    parser.set_defaults(handler=live)


def ssh_command(args: argparse.Namespace) -> list[str]:
    command = ["ssh"]
    for flag, value in (("-F", args.ssh_config), ("-i", args.identity), ("-p", args.ssh_port)):
        if value:
            command += [flag, value]
    for option in args.ssh_options:
        command += ["-o", option]
    return [*command, *SSH_DEFAULTS]


def remote_socket(args: argparse.Namespace, ssh: list[str]) -> str:
    """The socket's path on HOST, from `metascope status --json` there."""
    if args.host.startswith("-"):
        raise UsageError(f"HOST {args.host!r} looks like an option")
    command = f"{args.remote_command or DEFAULT_REMOTE} status --json"
    if args.remote_config:
        command += f" --config {shlex.quote(args.remote_config)}"
    answer = subprocess.run([*ssh, args.host, command], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    detail = answer.stderr.strip().splitlines()[-3:]
    if answer.returncode == 255:
        raise CommandError(f"cannot reach {args.host} over ssh: {' '.join(detail) or 'ssh exited 255'}")
    if answer.returncode in (126, 127):
        raise CommandError(f"metascope is not installed on {args.host} (or give --remote-command): {' '.join(detail)}")
    if answer.returncode != 0:
        raise CommandError(f"metascope status on {args.host} failed (exit {answer.returncode}): {' '.join(detail)}")
    try:
        report: dict[str, Any] = json.loads(answer.stdout)
    except ValueError:
        raise CommandError(f"metascope status on {args.host} sent something that is not JSON") from None
    sockets = report.get("live") or {}
    if args.doctor:
        if not sockets.get("doctor_socket"):
            raise CommandError(f"{args.host}'s metascope does not say where doctor serves: give --socket PATH")
        return str(sockets["doctor_socket"])
    return str(sockets.get("socket") or f"{report['state_dir']}/{LIVE_SOCKET_NAME}")  # a Pi older than live views


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Forward:
    """`ssh -N -L` in the background, its messages passed on to this terminal and the last kept."""

    def __init__(self, ssh: list[str], host: str, port: int, path: str, serving: str):
        self.host, self.port, self.path, self.serving = host, port, path, serving
        forward = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{port}:{path}", host]
        self.process = subprocess.Popen([*ssh, *forward], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.messages: deque[str] = deque(maxlen=5)
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        for line in self.process.stderr:
            self.messages.append(line.strip())
            sys.stderr.write(line)

    def ended(self, why: str) -> CommandError:
        time.sleep(0.2)  # ssh's last words
        said = "; ".join(self.messages) or f"ssh exited {self.process.returncode}"
        return CommandError(f"{why}: {said}")

    def wait_until_answered(self) -> None:
        """Until the page's status answers through the forward; CommandError saying why not."""
        deadline, tries = time.monotonic() + FORWARD_WAIT_S, 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.ended(f"ssh could not forward 127.0.0.1:{self.port} to {self.host}:{self.path}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", "/status.json")
                if connection.getresponse().status == 200:
                    return
            except ConnectionRefusedError:
                pass  # ssh is not listening yet
            except (OSError, http.client.HTTPException):
                tries += 1  # ssh listens, but nothing answered on the far side
                if tries >= ANSWER_TRIES:
                    break
            time.sleep(0.2)
        raise self.ended(f"nothing answers on {self.host}:{self.path}; is {self.serving} running?")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end it as Ctrl-C does, so the ssh forward never outlives it."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def live(args: argparse.Namespace) -> int:
    ssh = ssh_command(args)
    with interrupted_by_signals():
        try:
            path = args.socket or remote_socket(args, ssh)
            serving = "`metascope doctor --capture N --live`" if args.doctor else "the service (metascope run)"
            forward = Forward(ssh, args.host, args.port or free_port(), path, serving)
            try:
                forward.wait_until_answered()
                url = f"http://127.0.0.1:{forward.port}/"
                print(f"live view of {args.host} ({path}): {url}\nCtrl-C ends it.", flush=True)
                if args.open:
                    import webbrowser

                    webbrowser.open(url)
                forward.process.wait()
                raise forward.ended(f"the connection to {args.host} ended")
            finally:
                forward.stop()
        except KeyboardInterrupt:
            return 0
