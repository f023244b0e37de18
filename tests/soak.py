"""The soak: a rig's faults compressed into minutes, against `metascope run` as systemd runs it
(a subprocess, restarted after each stop), with a final account as JSON.

Faults, on a schedule, on the synthetic source (a new field of cells every frame): a corrupt
database at start (set aside, a new one started), kill -9 mid-run, the snapshots folder replaced
by a file for a while, the state disk full for a while (a sized tmpfs: root only, else left out and
said so: disk_full_injected), the whole process stalled (SIGSTOP) for a few seconds, the
snapshots folder read-only for a while (a read-only bind mount as root, else its mode bits). On
the still source (the same cells frame after frame, moving and dividing now and then): kill -9
and a stall. On the camera
(tests/fakes.py's FakePicamera2, through tests/soak_camera.py): busy at start, stalled mid-run (the
run gives up, exit 3, and is restarted) and busy at that restart. Then one uninterrupted segment
whose resident memory is sampled from /proc.

Rows lost = rows (frames, views, cells) committed before a fault and missing after it: must be 0.
Frames not stored by design are counted apart: those classified while the disk was full must equal
the service's own `unsaved_frames`; those classified after the last commit before a kill -9 are
the killed run's last status.json figure minus its stored frames (an upper bound: status.json is
written every 0.2 s here).

    python tests/soak.py --model models/mda231-pc3-fast.tflite --long-frames 50000 --out var/soak/soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TABLES = ("frames", "views", "cells")


def toml(data: dict[str, Any]) -> str:
    lines = [f"{key} = {json.dumps(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines += [f"\n[{section}]"] + [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


class Rig:
    """One state directory and the `metascope run` processes that use it, one at a time."""

    def __init__(self, work: Path, model: str, cells: int, fps: float, threads: int):
        self.work, self.model = work, model
        work.mkdir(parents=True, exist_ok=True)
        self.state = work / "state"
        self.config = work / "metascope.toml"
        self.settings = {
            "state_dir": str(self.state),
            "source": {"kind": "synthetic", "synthetic_cells": cells, "fps": fps},
            "model": {"threads": threads},
            "store": {"commit_interval_s": 0.2, "min_free_mb": 4.0, "retention_days": 0.0, "max_db_mb": 0.0},
            "snapshots": {"every_n_frames": 5, "min_free_mb": 8.0, "max_mb": 16.0},
            "crops": {"min_free_mb": 6.0, "max_mb": 16.0},
            "service": {"status_interval_s": 0.2, "summary_interval_s": 5.0},
        }
        self.process: subprocess.Popen | None = None
        self.log = work / "service.log"
        self.launcher = [sys.executable, "-m", "edge"]
        self.env: dict[str, str] = {}

    def start(self, *extra: str, fps: float | None = None) -> None:
        settings = json.loads(json.dumps(self.settings))
        if fps is not None:
            settings["source"]["fps"] = fps
        self.config.write_text(toml(settings))
        command = [*self.launcher, "run", "--config", str(self.config), "--model", self.model, *extra]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})  # fmt: skip

    def stop(self, signum: int = signal.SIGTERM, limit_s: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        code = self.process.wait(limit_s)
        self.process = None
        return code

    def status(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.state / "status.json").read_text())
        return {}

    def ids(self) -> dict[str, set[int]]:
        """Every committed row's id, by table (read-only, as a pull would read)."""
        database = self.state / "metascope.db"
        if not database.exists():
            return {table: set() for table in TABLES}
        db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return {table: {row[0] for row in db.execute(f"SELECT id FROM {table}")} for table in TABLES}
        finally:
            db.close()

    def stored_frames(self, run_id: int) -> int:
        db = sqlite3.connect(f"{(self.state / 'metascope.db').as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute("SELECT count(*) FROM frames WHERE run_id = ?", (run_id,)).fetchone()[0]
        finally:
            db.close()

    def wait_frames(self, more: int, limit_s: float = 120.0) -> None:
        """Until the running service has classified ``more`` frames beyond now (its status.json)."""
        target = self.status().get("counters", {}).get("frames", 0) + more
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-2000:]
            status = self.status()
            if status.get("state") == "running" and status.get("counters", {}).get("frames", 0) >= target:
                return
            time.sleep(0.1)
        raise AssertionError(f"the service did not classify {more} more frames in {limit_s} s")

    def wait_running(self, limit_s: float = 120.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("state") == "running" and status.get("pid") == self.process.pid:
                return
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            time.sleep(0.1)
        raise AssertionError(f"the service did not start in {limit_s} s")


class Account:
    """What the soak did and what came of it."""

    def __init__(self) -> None:
        self.faults: list[dict[str, Any]] = []
        self.rows_lost = 0
        self.unsaved_by_design = {"disk_full": 0, "after_last_commit_at_kill": 0}
        self.unsaved_counted_by_service = 0
        self.frames = 0
        self.cells = 0

    def fault(self, name: str, recovered: bool, **facts: Any) -> None:
        self.faults.append({"fault": name, "recovered": bool(recovered), **facts})

    def lost(self, before: dict[str, set[int]], after: dict[str, set[int]]) -> int:
        missing = sum(len(before[table] - after[table]) for table in TABLES)
        self.rows_lost += missing
        return missing

    def add_run(self, status: dict[str, Any]) -> None:
        counters = status.get("counters", {})
        self.frames += counters.get("frames", 0)
        self.cells += counters.get("cells", 0)
        self.unsaved_counted_by_service += counters.get("unsaved_frames", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "cells": self.cells,
            "faults_injected": len(self.faults),
            "faults_recovered": sum(fault["recovered"] for fault in self.faults),
            "rows_lost": self.rows_lost,
            "frames_not_stored_by_design": self.unsaved_by_design,
            "frames_unsaved_by_the_services_counters": self.unsaved_counted_by_service,
            "faults": self.faults,
        }


def corrupt_database(rig: Rig, account: Account, frames: int) -> None:
    """A database that SQLite calls not a database: set aside (kept), a new one started."""
    rig.start()
    rig.wait_running()
    rig.wait_frames(frames)
    code = rig.stop()
    account.add_run(rig.status())
    database = rig.state / "metascope.db"
    with database.open("r+b") as handle:
        handle.write(b"this is not an SQLite database, it was overwritten\0" * 4)
    rig.start()
    rig.wait_running()
    rig.wait_frames(frames)
    aside = sorted(path.name for path in rig.state.glob("metascope.corrupt-*.db"))
    account.fault("corrupt database", code == 0 and bool(aside) and len(rig.ids()["frames"]) > 0, set_aside=aside)


def kill_9(rig: Rig, account: Account, frames: int, where: str = "") -> None:
    """kill -9 mid-run, then a restart: nothing committed is lost."""
    rig.wait_frames(frames)
    before = rig.ids()
    rig.process.send_signal(signal.SIGKILL)
    rig.process.wait(30)
    rig.process = None
    killed = rig.status()
    account.add_run(killed)
    stored = rig.stored_frames(killed["run_id"])
    account.unsaved_by_design["after_last_commit_at_kill"] += max(0, killed["counters"]["frames"] - stored)
    rig.start()
    rig.wait_running()
    rig.wait_frames(frames)
    missing = account.lost(before, rig.ids())
    account.fault(f"kill -9{where}", missing == 0, rows_missing=missing)


@contextlib.contextmanager
def replaced_by_a_file(folder: Path):
    """``folder`` replaced by a file for a while, then put back. Yields True: that always works."""
    kept = folder.with_name(folder.name + ".kept")
    folder.rename(kept)
    folder.write_text("not a folder\n")
    try:
        yield True
    finally:
        folder.unlink()
        kept.rename(folder)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` read-only for a while: a read-only bind mount as root (whom permissions do not
    stop), else its mode bits. Yields whether a write there now fails; put back afterwards."""
    mounted = os.geteuid() == 0 and all(
        subprocess.run(command, capture_output=True).returncode == 0
        for command in (["mount", "--bind", str(folder), str(folder)],
                        ["mount", "-o", "remount,bind,ro", str(folder)])
    )  # fmt: skip
    mode = folder.stat().st_mode
    if not mounted:
        folder.chmod(0o555)
    probe = folder / ".soak-probe"
    try:
        probe.write_text("")
        probe.unlink()
        refused = False
    except OSError:
        refused = True
    try:
        yield refused
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(mode)


def snapshots_folder_unusable(rig: Rig, account: Account, frames: int, fault: str, unusable) -> bool:
    """The snapshots folder made unusable by ``unusable`` (a context manager yielding whether it
    worked) for a while: a counter, and snapshots again after. False when it could not be done here."""
    before = rig.ids()
    with unusable(rig.state / "snapshots") as done:
        if not done:
            return False
        failures = rig.status()["counters"]["snapshot_failures"]
        rig.wait_frames(frames)
        failed = rig.status()["counters"]["snapshot_failures"] - failures
    written = rig.status()["counters"]["snapshots"]
    rig.wait_frames(frames)
    again = rig.status()["counters"]["snapshots"] > written
    missing = account.lost(before, rig.ids())
    account.fault(fault, failed > 0 and again and missing == 0, snapshot_failures=failed, rows_missing=missing)
    return True


def disk_full(rig: Rig, account: Account, frames: int) -> None:
    """The state disk filled to the last byte for a while, then freed."""
    filler = rig.state / "filler"
    before = rig.ids()
    unsaved = rig.status()["counters"]["unsaved_frames"]
    with contextlib.suppress(OSError), filler.open("wb") as handle:  # its closing flush fails too
        while True:
            handle.write(b"\0" * 65536)
    time.sleep(frames / rig.settings["source"]["fps"])  # status.json cannot be written either meanwhile
    assert rig.process.poll() is None, "the service runs on through a full disk"
    filler.unlink()
    rig.wait_frames(1)
    during = rig.status()["counters"]["unsaved_frames"] - unsaved
    stored = len(rig.ids()["frames"])
    rig.wait_frames(frames)
    resumed = len(rig.ids()["frames"]) > stored
    missing = account.lost(before, rig.ids())
    account.fault("disk full", during > 0 and resumed and missing == 0, frames_unsaved=during, rows_missing=missing)


def stall(rig: Rig, account: Account, frames: int, seconds: float = 3.0, where: str = "") -> None:
    """The whole process stopped (SIGSTOP) for a few seconds, as under an I/O or memory stall."""
    before = rig.ids()
    rig.process.send_signal(signal.SIGSTOP)
    time.sleep(seconds)
    rig.process.send_signal(signal.SIGCONT)
    rig.wait_frames(frames)
    missing = account.lost(before, rig.ids())
    account.fault(f"process stalled {seconds:g} s{where}", missing == 0, rows_missing=missing)


def still_field(rig: Rig, account: Account, frames: int) -> int:
    """The still source: the same cells frame after frame, the stage moving and cells dividing
    now and then, so cells are followed for long across a kill -9 and a stall. The clean stop's
    exit code."""
    source = rig.settings["source"]
    source.update(kind="still", still_move_every=4 * frames, still_divide_every=max(1, frames // 2))
    rig.start()
    rig.wait_running()
    kill_9(rig, account, frames, where=" (still field)")
    stall(rig, account, frames, where=" (still field)")
    before = rig.ids()
    code = rig.stop()
    account.add_run(rig.status())
    account.lost(before, rig.ids())
    return code


def camera_rig(work: Path, model: str, threads: int) -> tuple[Rig, Path]:
    """A rig on tests/fakes.py's FakePicamera2 (tests/soak_camera.py), and the folder whose files steer it."""
    rig = Rig(work, model, 0, 0.0, threads)
    control = work / "camera-control"
    control.mkdir()
    rig.settings["source"] = {"kind": "picamera2", "timeout_s": 1.0, "max_failures": 3}
    rig.launcher = [sys.executable, str(Path(__file__).with_name("soak_camera.py"))]
    rig.env = {"SOAK_CAMERA_CONTROL": str(control)}
    return rig, control


def camera_faults(rig: Rig, control: Path, account: Account, frames: int) -> None:
    """The camera busy at start (another program has it), stalled mid-run (the run gives up: exit 3,
    restarted as systemd would) and busy again at that restart."""
    (control / "busy").touch()
    rig.start()
    time.sleep(2.0)
    (control / "busy").unlink()
    rig.wait_running()
    rig.wait_frames(frames)
    account.fault("camera busy at start", True)
    before = rig.ids()
    (control / "stall").touch()
    code = rig.process.wait(60)
    rig.process = None
    account.add_run(rig.status())
    (control / "busy").touch()
    (control / "stall").unlink()
    rig.start()
    time.sleep(3.0)
    (control / "busy").unlink()
    rig.wait_running()
    rig.wait_frames(frames)
    missing = account.lost(before, rig.ids())
    account.fault("camera stalled mid-run (exit 3, restarted)", code == 3 and missing == 0, exit_code=code,
                  rows_missing=missing)  # fmt: skip
    account.fault("camera busy at the restart", True)
    before = rig.ids()
    rig.stop()
    account.add_run(rig.status())
    account.lost(before, rig.ids())


@contextlib.contextmanager
def state_disk(state: Path, size_mb: int):
    """A sized tmpfs for the state directory (root only): True when mounted."""
    state.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(state)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(state)], check=False)


def faults(rig: Rig, account: Account, frames: int, disk: bool) -> dict[str, Any]:
    """The fault schedule; the last run's clean stop and its own account of unsaved frames."""
    corrupt_database(rig, account, frames)
    kill_9(rig, account, frames)
    snapshots_folder_unusable(rig, account, frames, "snapshots folder replaced by a file", replaced_by_a_file)
    read_only_injected = snapshots_folder_unusable(rig, account, frames, "snapshots folder read-only", read_only)
    if disk:
        disk_full(rig, account, frames)
    stall(rig, account, frames)
    before = rig.ids()
    code = rig.stop()
    final = rig.status()
    account.add_run(final)
    counters = final["counters"]
    stored = rig.stored_frames(final["run_id"])
    account.unsaved_by_design["disk_full"] = counters["frames"] - stored
    account.lost(before, rig.ids())
    return {"last_exit_code": code, "read_only_injected": read_only_injected,
            "last_run_unsaved_frames": counters["unsaved_frames"],
            "last_run_classified_minus_stored": counters["frames"] - stored}  # fmt: skip


def uninterrupted(rig: Rig, frames: int, warmup: int) -> dict[str, Any]:
    """One run of ``frames`` frames as fast as they come; resident memory from /proc every second."""
    rig.start("--max-frames", str(frames), fps=0.0)
    samples: list[tuple[int, float]] = []
    while rig.process.poll() is None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            rss_kb = int(Path(f"/proc/{rig.process.pid}/status").read_text().split("VmRSS:")[1].split()[0])
            samples.append((rig.status().get("counters", {}).get("frames", 0), rss_kb / 1024))
        time.sleep(1.0)
    code = rig.process.wait()
    after = [round(mb, 1) for frame, mb in samples if frame >= warmup]
    at_warmup = after[0] if after else None
    return {
        "frames": frames,
        "warmup_frames": warmup,
        "exit_code": code,
        "resident_mb_at_warmup": at_warmup,
        "resident_mb_end": after[-1] if after else None,
        "resident_mb_max_after_warmup": max(after) if after else None,
        "resident_drift_mb": round(max(after) - at_warmup, 2) if after else None,
        "samples": [{"frame": frame, "mb": round(mb, 1)} for frame, mb in samples[:: max(1, len(samples) // 200)]],
    }


def run_soak(work: Path, model: str, fault_frames: int, long_frames: int, cells: int, fps: float,
             threads: int) -> dict[str, Any]:  # fmt: skip
    rig, account = Rig(work, model, cells, fps, threads), Account()
    started = time.monotonic()
    with state_disk(rig.state, 96) as disk:
        try:
            ending = faults(rig, account, fault_frames, disk)
        finally:
            if rig.process is not None:
                rig.process.kill()
                rig.process.wait()
    still = Rig(work / "still", model, cells, fps, threads)
    try:
        still_exit_code = still_field(still, account, fault_frames)
    finally:
        if still.process is not None:
            still.process.kill()
            still.process.wait()
    camera, control = camera_rig(work / "camera", model, threads)
    try:
        camera_faults(camera, control, account, fault_frames)
    finally:
        if camera.process is not None:
            camera.process.kill()
            camera.process.wait()
    memory = uninterrupted(Rig(work / "long", model, cells, 0.0, threads), long_frames, long_frames // 10)
    return {
        "soak": "metascope run under faults",
        "model": model,
        "threads": threads,
        "cells_per_frame": cells,
        "fault_schedule_fps": fps,
        "disk_full_injected": disk,
        **account.as_dict(),
        **ending,
        "still_field_exit_code": still_exit_code,
        "uninterrupted": memory,
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "mda231-pc3-fast.tflite"))
    parser.add_argument("--work", default=None, help="a folder for the state directories (default: a temporary one)")
    parser.add_argument("--fault-frames", type=int, default=300, help="frames before and after each fault")
    parser.add_argument("--long-frames", type=int, default=50_000, help="frames of the uninterrupted segment")
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--fps", type=float, default=20.0, help="the fault schedule's frame rate")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="metascope-soak-", dir=args.work) as work:
        result = run_soak(Path(work), args.model, args.fault_frames, args.long_frames, args.cells, args.fps,
                          args.threads)  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    accounted = result["last_run_unsaved_frames"] == result["last_run_classified_minus_stored"]
    stopped = result["last_exit_code"] == 0 and result["still_field_exit_code"] == 0
    ok = result["rows_lost"] == 0 and result["faults_recovered"] == result["faults_injected"] and accounted and stopped
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
