"""Pull bench: what a pull costs on the desktop as the rows held grow (issue 20.4).

For each size, a stand-in Pi's results database is made with the real schema (edge.record.schema)
and filled with N synthetic views (a frame per 20 views, a closed cell per 5, one run); then
deploy/pull.sh pulls it through a real sshd on loopback (tests/sshd_harness.py) and the Pi's real
`metascope export`: the first pull (everything), no-op pulls (nothing new; median of --repeat), and
incremental pulls, each after --new more views (and their frames and cells) were added (median of
--repeat), taken in turns across the sizes. Each pull's
wall time and the peak resident memory of its largest desktop process (pull.sh, ssh, python3
pull_merge.py: RUSAGE_CHILDREN of a wrapper, so the Pi side, here sshd's children, is not counted)
go to JSON. The synthetic rows are made in SQL, not by `metascope run` (5M views would take days
of frames); every row then travels the way a real one does.

    python deploy/pull_bench.py --views 50000 500000 5000000 --out var/bench/pull.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the sshd harness the deploy tests use
sys.path.insert(0, str(REPO))

from sshd_harness import ALIAS, running_sshd  # noqa: E402

from edge.record.schema import migrate  # noqa: E402

VIEWS_PER_FRAME, VIEWS_PER_CELL = 20, 5
# Reports the peak RSS (KiB) of the largest process among the command and its descendants, and
# their CPU seconds (less swayed than wall time by whatever else the machine runs).
MEASURE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr); sys.exit(r.returncode)"
)


def value_sql(name: str, kind: str, table: str) -> str:
    """A plausible value for one column of row i (SQL over the CTE's i): times, ids, numbers."""
    if name.endswith("_at"):
        return "strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || (i / 10.0) || ' seconds')"
    if name == "run_id":
        return "1"
    if name == "frame_id":
        return f"(i - 1) / {VIEWS_PER_FRAME} + 1"
    if name in ("label", "end_reason"):
        return "CASE i % 2 WHEN 0 THEN 'PC3' ELSE 'MDA231' END" if name == "label" else "'lost'"
    if name == "track":
        return "i"
    if "INT" in kind.upper():
        return "i % 7"
    if "REAL" in kind.upper():
        return "(i % 1000) / 1000.0"
    return "'x'"


def add_rows(db: sqlite3.Connection, table: str, first: int, count: int) -> None:
    """Rows first..first+count-1 of ``table`` (ids given, so every size is the same rows)."""
    columns = [(row[1], row[2]) for row in db.execute(f'PRAGMA table_info("{table}")') if row[1] != "id"]
    names = ", ".join(name for name, _ in columns)
    values = ", ".join(value_sql(name, kind, table) for name, kind in columns)
    db.execute(
        f"WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        f"INSERT INTO {table} (id, {names}) SELECT i, {values} FROM n",
        (first, first + count - 1),
    )


def grow(database: Path, views_before: int, views: int) -> None:
    """The Pi's database from ``views_before`` to ``views`` views (frames and cells in step)."""
    db = sqlite3.connect(database, isolation_level=None)
    migrate(db)
    db.execute("BEGIN")
    if views_before == 0:
        add_rows(db, "runs", 1, 1)
    for table, per in (("views", 1), ("frames", VIEWS_PER_FRAME), ("cells", VIEWS_PER_CELL)):
        add_rows(db, table, views_before // per + 1, views // per - views_before // per)
    db.execute("COMMIT")
    db.close()


def pull(sshd, config: Path, dest: Path) -> tuple[float, float, float, str]:
    """One pull.sh run: seconds, peak MB of its largest desktop process, the desktop's CPU
    seconds, its output."""
    remote = f"env PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m edge"
    command = ["bash", str(REPO / "deploy" / "pull.sh"), ALIAS, "-F", str(sshd.ssh_config), "--dest", str(dest)]
    command += ["--remote-command", remote, "--remote-config", str(config), "--no-snapshots", "--no-crops"]
    start = time.perf_counter()
    result = subprocess.run(["python3", "-c", MEASURE, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"pull failed ({result.returncode}): {result.stderr}")
    peak_kib, cpu_s = result.stderr.strip().splitlines()[-1].split()
    return seconds, int(peak_kib) / 1024, float(cpu_s), result.stdout


class Rig:
    """One size: a stand-in Pi's database of N views and the folder it is pulled into."""

    def __init__(self, sshd, folder: Path, views: int) -> None:
        self.sshd, self.views, self.held = sshd, views, views
        self.state = folder / f"pi-{views}"
        self.state.mkdir()
        self.config = folder / f"pi-{views}.toml"
        self.config.write_text(f'state_dir = "{self.state}"\n')
        self.dest = folder / f"results-{views}"
        grow(self.state / "metascope.db", 0, views)
        seconds, peak_mb, cpu_s, _ = pull(sshd, self.config, self.dest)
        self.figures: dict[str, object] = {
            "held_views": views,
            "held_rows": views + views // VIEWS_PER_FRAME + views // VIEWS_PER_CELL + 1,
            "first_pull_s": round(seconds, 2),
            "first_pull_peak_mb": round(peak_mb, 1),
            "first_pull_desktop_cpu_s": round(cpu_s, 2),
        }
        self.noop: list[tuple[float, float, float]] = []
        self.incremental: list[tuple[float, float, float]] = []

    def pull_nothing(self) -> None:
        *measured, out = pull(self.sshd, self.config, self.dest)
        assert "views: no new rows" in out, out
        self.noop.append(tuple(measured))

    def pull_new(self, new: int) -> None:
        grow(self.state / "metascope.db", self.held, self.held + new)
        self.held += new
        *measured, out = pull(self.sshd, self.config, self.dest)
        assert f"views: {new} new rows" in out, out
        self.incremental.append(tuple(measured))

    def result(self, new: int) -> dict[str, object]:
        def summary(name: str, runs: list[tuple[float, float, float]]) -> dict[str, object]:
            return {
                f"{name}_s": round(statistics.median(run[0] for run in runs), 3),
                f"{name}_s_each": [round(run[0], 3) for run in runs],
                f"{name}_peak_mb": round(max(run[1] for run in runs), 1),
                f"{name}_desktop_cpu_s": round(statistics.median(run[2] for run in runs), 3),
            }

        store_mb = round((self.dest / ALIAS / "results.sqlite").stat().st_size / 2**20, 1)
        noop, incremental = summary("noop", self.noop), summary("incremental", self.incremental)
        return {**self.figures, **noop, "new_views": new, **incremental, "store_mb": store_mb}


def bench(sshd, folder: Path, sizes: list[int], new: int, repeat: int) -> list[dict[str, object]]:
    """Every size set up first, then the no-op and the incremental pulls taken in turns across
    the sizes (the order reversed each round), so a machine whose load drifts weighs on all alike."""
    rigs = [Rig(sshd, folder, views) for views in sizes]
    for round_ in range(repeat):
        for rig in rigs if round_ % 2 == 0 else rigs[::-1]:
            rig.pull_nothing()
    for round_ in range(repeat):
        for rig in rigs if round_ % 2 == 0 else rigs[::-1]:
            rig.pull_new(new)
    results = [rig.result(new) for rig in rigs]
    for result in results:
        print(json.dumps(result), flush=True)
    return results


def verdict(sizes: list[dict[str, object]]) -> dict[str, object]:
    """Issue 20's bar, largest size against the one ten times smaller, when both were run."""
    by_views = {size["held_views"]: size for size in sizes}
    pairs = [(big, by_views[big // 10]) for big in sorted(by_views) if big // 10 in by_views]
    if not pairs:
        return {}
    big, small = (by_views[pairs[-1][0]], pairs[-1][1])
    return {
        "compared": f"{big['held_views']} against {small['held_views']} views held",
        "noop_ratio": round(big["noop_s"] / small["noop_s"], 3),
        "noop_desktop_cpu_ratio": round(big["noop_desktop_cpu_s"] / small["noop_desktop_cpu_s"], 3),
        "incremental_ratio": round(big["incremental_s"] / small["incremental_s"], 3),
        "noop_peak_mb": big["noop_peak_mb"],
        "met": big["noop_s"] <= 1.2 * small["noop_s"]
        and big["incremental_s"] <= 1.2 * small["incremental_s"]
        and big["noop_peak_mb"] < 150,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, nargs="+", default=[50_000, 500_000], help="views held, each size")
    parser.add_argument("--new", type=int, default=10_000, help="views added before the incremental pull")
    parser.add_argument("--repeat", type=int, default=5, help="no-op and incremental pulls per size (medians kept)")
    parser.add_argument("--out", type=Path, default=Path("var/bench/pull.json"))
    args = parser.parse_args()
    missing = [tool for tool in ("ssh", "ssh-keygen", "rsync") if shutil.which(tool) is None]
    if missing or not (Path("/usr/sbin/sshd").exists() or shutil.which("sshd")):
        raise SystemExit(f"pull bench: needs openssh-server, openssh-client and rsync (missing: {missing or ['sshd']})")
    with tempfile.TemporaryDirectory(prefix="pull-bench-") as temporary, running_sshd(Path(temporary) / "sshd") as sshd:
        sizes = bench(sshd, Path(temporary), args.views, args.new, args.repeat)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": " ".join(["python", "deploy/pull_bench.py", *sys.argv[1:]]),
        "sizes": sizes,
        "verdict": verdict(sizes),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["verdict"]))


if __name__ == "__main__":
    main()
