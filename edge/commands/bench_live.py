"""`metascope bench live`: what the live view costs the loop. The service loop (`bench pipeline`)
runs twice on the same frames: with nobody watching, then with a client that takes frames as the
page does (a frame at most every 1 / client_hz s, the status once a second) from another process
over the unix socket, as sshd's forward would. Reported: both runs' end-to-end latency, frames a
second and this process's CPU time a frame (the live view's drawing and encoding included), the
difference, what the client got, and the machine. Unwatched and watched runs alternate (A B B A),
since on a shared machine the load drifts while they run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge.classify.classifier import Classifier
from edge.commands.benchmarks import bench_pipeline, machine

# The client: a page's requests (stdlib only, its own process, so its CPU is not the loop's).
CLIENT = r"""
import socket, sys, time
path, hz = sys.argv[1], float(sys.argv[2])

def get(target):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        client.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := client.recv(1 << 16):
            data += chunk
    for line in data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n"):
        if line.lower().startswith("x-frame:"):
            return int(line.split(":")[1])
    return None

after, status_due = 0, 0.0
while True:
    started = time.monotonic()
    after = get(f"/frame.jpg?after={after}&client=bench") or after
    if started >= status_due:
        get("/status.json")
        status_due = started + 1.0
    time.sleep(max(0.0, 1.0 / hz - (time.monotonic() - started)))
"""


ADDED = ("end_to_end_p50_ms", "end_to_end_p99_ms", "end_to_end_mean_ms", "process_cpu_ms_per_frame")


def bench_live(classifier: Classifier, client_hz: float = 10.0, rounds: int = 2, **pipeline: Any) -> dict[str, Any]:
    """``bench_pipeline(classifier, **pipeline)`` unwatched and watched at ``client_hz``, ``rounds``
    times each in the order A B B A ..., so that a load drifting on a shared machine weighs on both alike."""
    watched_key = f"client_at_{client_hz:g}_hz"
    order = [("nobody_watching", watched_key)[(step + 1) // 2 % 2] for step in range(2 * rounds)]
    runs: dict[str, list[dict[str, float]]] = {"nobody_watching": [], watched_key: []}
    clients: list[dict[str, Any]] = []
    alone: dict[str, Any] = {}
    for kind in order:
        if kind == "nobody_watching":
            alone = bench_pipeline(classifier, **pipeline)
            runs[kind].append(_figures(alone))
        else:
            result, served = _watched(classifier, client_hz, pipeline)
            runs[kind].append(_figures(result))
            clients += served
    means = {kind: {key: round(sum(run[key] for run in found) / len(found), 3) for key in found[0]}
             for kind, found in runs.items()}  # fmt: skip
    first, second = means.values()
    added = {key: round(second[key] - first[key], 3) for key in ADDED}
    sent = sum(client["frames_sent"] for client in clients) / max(len(clients), 1)
    if sent:  # the extra CPU spread over the frames the client got: what one frame watched costs
        frames_run = alone["frames"] + alone["warmup_frames"]
        added["process_cpu_ms_per_frame_sent"] = round(added["process_cpu_ms_per_frame"] * frames_run / sent, 3)
    return {
        "benchmark": "live",
        "model": alone["model"],
        "threads": alone["threads"],
        "frame": alone["frame"],
        "field": alone["field"],
        "frames": alone["frames"],
        "client_hz": client_hz,
        "order": order,
        "runs": means,
        "each_run": runs,
        "added_by_the_client": added,
        "client": clients,
        "machine": machine(),
    }


def _watched(classifier: Classifier, client_hz: float, pipeline: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """The loop with a client in another process taking frames and status from its live view."""
    from edge.service.live import LiveView

    with tempfile.TemporaryDirectory(prefix="metascope-bench-live-") as folder:
        view = LiveView(Path(folder) / "live.sock", "bench")
        with view:
            client = subprocess.Popen([sys.executable, "-c", CLIENT, str(view.path), str(client_hz)])
            try:
                result = bench_pipeline(classifier, live=view, **pipeline)
            finally:
                client.terminate()
                client.wait()
        return result, view.feed.clients.report(view.feed.newest)


def _figures(run: dict[str, Any]) -> dict[str, float]:
    return {
        "end_to_end_p50_ms": run["end_to_end"]["p50_ms"],
        "end_to_end_p99_ms": run["end_to_end"]["p99_ms"],
        "end_to_end_mean_ms": run["end_to_end"]["mean_ms"],
        "process_cpu_ms_per_frame": run["process_cpu_ms_per_frame"],
        "fps": run["frames_per_second"],
        "cpu_steal_percent": run["cpu_steal_percent"] or 0.0,
    }
