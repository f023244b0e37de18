"""Fit bench: what one `metascope-train fit` costs a lab desktop, in peak memory, wall time and
CPU (issue 19.9: a fit of the shared data once peaked at 16-21 GB resident).

Each backbone's fit runs as its own child process (`python -m train fit DATA --out TMP/NAME
--backbone B --epochs E` plus the options after ``--``). Two memory figures: the kernel's own
high-water mark of its largest process (ru_maxrss from wait4: a fit's own process, or one of the
processes its cross-validation folds train in, train/isolated.py), and the peak of all its
processes' resident memory together, sampled from /proc every quarter second (what the machine
must hold at once; a sample can miss a peak shorter than that).
The fit's files go to a temporary folder and are removed; the JSON keeps the command, the exit
code, the cells trained on (from the card) and the figures.

    python -m train.fit_bench --data ../shared/data/fayyaz-mda231-pc3 --out var/bench/fit.json \\
        -- --positive PC3 --group-by '(\\d+kD\\d)'
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge.commands.benchmarks import machine, write_json
from edge.errors import ExitCode
from train.recipe import BACKBONES

# What `make bench` measures: the shipped models' backbone and the compact CNN.
BENCHED_BACKBONES = ("lite0", "compact")
# A fit that ran to its end and refused its model (int8 agreement or a held-out group below its
# bar) still spent what the bench measures: the refusal is reported, not a failed bench.
FINISHED = (ExitCode.OK, ExitCode.EXPORT_REFUSED)
SAMPLE_S = 0.25
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and every process below it, now (KiB, from /proc/PID/stat)."""
    parent, rss = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the command name may hold spaces
        except (OSError, IndexError):
            continue  # a process that ended while it was read
        pid = int(stat.parent.name)
        parent[pid], rss[pid] = int(fields[1]), int(fields[21]) * PAGE_KIB
    total = 0
    for pid, kib in rss.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parent:
            ancestor = parent[ancestor]
        total += kib if ancestor == root else 0
    return total


class TreePeak(threading.Thread):
    """Samples a process tree's total resident memory until stopped; ``peak_kib`` the largest."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.peak_kib, self.stopped = root, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.root))


# Where each kind of ending leaves the count of cells a fit learnt from: the card; the card inside
# NAME.refused.json (a held-out group below --min-group-auc); the float model's card, which counts
# the training cells' areas (an int8 export refused).
CELL_COUNTS = {
    ".json": ("data", "cells"),
    ".refused.json": ("card", "data", "cells"),
    ".refused.float.json": ("data", "cell_area_px", "n"),
}


def cells_trained(out: Path) -> int | None:
    """The cells the fit learnt from, as the files it wrote say (None: it wrote none)."""
    for suffix, keys in CELL_COUNTS.items():
        path = out.with_name(out.name + suffix)
        if path.is_file():
            value: Any = json.loads(path.read_text())
            for key in keys:
                value = value[key]
            return sum(value.values()) if isinstance(value, dict) else int(value)
    return None


def measure_fit(data: str, backbone: str, epochs: int, fit_options: list[str]) -> dict[str, Any]:
    """One fit in a child process: exit code, cells, peak RSS, wall and CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="metascope-fit-bench-") as tmp:
        out = Path(tmp) / f"bench-{backbone}"
        command = [sys.executable, "-m", "train", "fit", data, "--out", str(out), "--backbone", backbone]
        command += ["--epochs", str(epochs), *fit_options]
        log = Path(tmp) / "fit.log"
        start = time.perf_counter()
        with log.open("w") as stderr:
            child = subprocess.Popen(command, stdout=stderr, stderr=subprocess.STDOUT)
            sampler = TreePeak(child.pid)
            sampler.start()
            # wait4, not Popen.wait: its rusage is this child's own (with the children it reaped),
            # and ru_maxrss the kernel's high-water mark of its largest process, in KiB on Linux.
            _, status, usage = os.wait4(child.pid, 0)
            sampler.stopped.set()
            sampler.join()
        wall_s = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        return {
            "backbone": backbone,
            "epochs": epochs,
            "command": shlex.join(command).replace(tmp, "TMP"),
            "exit_code": child.returncode,
            "cells": cells_trained(out),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "peak_rss_all_processes_mb": round(sampler.peak_kib / 1024, 1),
            "wall_s": round(wall_s, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "log_tail": log.read_text(errors="replace").strip().splitlines()[-3:],
        }


def outcome(exit_code: int) -> str:
    if exit_code == ExitCode.OK:
        return ""
    if exit_code == ExitCode.EXPORT_REFUSED:
        return " (exit 6: the fit finished and refused its model)"
    return f" (exit {exit_code}: the fit failed, see log_tail)"


def summary_line(result: dict[str, Any]) -> str:
    return "; ".join(
        f"{run['backbone']} {run['epochs']} epochs on {run['cells']} cells: peak {run['peak_rss_mb'] / 1024:.1f} GB "
        f"resident (largest process; {run['peak_rss_all_processes_mb'] / 1024:.1f} GB all together), "
        f"{run['wall_s'] / 60:.1f} min wall, {run['cpu_s'] / 60:.1f} min CPU{outcome(run['exit_code'])}"
        for run in result["fits"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.fit_bench",
        description="Peak memory, wall and CPU time of `metascope-train fit`, each backbone in its own process.",
        epilog="Options after -- go to every fit unchanged (e.g. -- --positive PC3 --group-by '(\\d+kD\\d)').",
    )
    parser.add_argument("--data", required=True, help="the labelled folder to fit")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (default 2: the cost per epoch shows)")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BENCHED_BACKBONES))
    parser.add_argument("--out", help="write the JSON here too")
    args, fit_options = parser.parse_known_args(argv)
    if fit_options[:1] == ["--"]:
        fit_options = fit_options[1:]
    elif fit_options:
        parser.error(f"unrecognised arguments before --: {' '.join(fit_options)}")
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: not a folder")
    fits = [measure_fit(args.data, backbone, args.epochs, fit_options) for backbone in args.backbones]
    result = {"bench": "fit", "machine": machine(), "fits": fits}
    print(write_json(result, args.out))
    print(f"bench fit: {summary_line(result)}", file=sys.stderr)
    return 0 if all(run["exit_code"] in FINISHED for run in fits) else 1


if __name__ == "__main__":
    sys.exit(main())
