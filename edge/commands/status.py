"""`metascope status`: the last run, totals, last frame time, rolling latency, disk use.

"cells" are distinct tracked cells (the rows of the cells table, and the open ones the running
service follows); "views" are model calls on them (the rows of the views table)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from edge.commands.common import CommandError, add_config_args, config_from_args
from edge.paths import doctor_socket_path, live_socket_path
from edge.record.opening import set_aside_databases
from edge.record.reading import StoreError, execute, has_table, open_readonly, results_tables, stored_tables
from edge.record.schema import version_of


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("status", help="what the service is doing and has done", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.set_defaults(handler=status)


def _pid_alive(pid: Any) -> bool:
    """Whether the process that wrote status.json still runs (a killed service leaves "running")."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user (the service's)
    return True


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _folder_report(folder: Path, pattern: str) -> dict[str, Any]:
    files = list(folder.glob(pattern)) if folder.is_dir() else []
    return {"folder": str(folder), "files": len(files), "bytes": sum(_file_size(path) for path in files)}


def _database_id(db: sqlite3.Connection) -> str | None:
    """The database's identity (schema 2 on); None for one the service has not migrated yet."""
    if "meta" not in stored_tables(db):
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()
    return None if row is None else str(row[0])


def gather(config: Any) -> dict[str, Any]:
    database = config.database_path
    report: dict[str, Any] = {"state_dir": str(config.state_path), "database": str(database)}
    live = None
    try:
        live = json.loads(config.status_path.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        report["status_file_error"] = f"{config.status_path}: {exc}"
    if not database.exists() and live is None:
        raise CommandError(f"{database}: no results database (the service has not run with this state_dir)")
    if live is not None:
        live["alive"] = live.get("state") == "running" and _pid_alive(live.get("pid"))
    report["service"] = live
    try:
        db = open_readonly(database)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    try:
        run = execute(db, "SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        columns = [d[0] for d in run.description]
        row = run.fetchone()
        last_run = dict(zip(columns, row, strict=True)) if row else None
        if last_run is not None:
            last_run.pop("config", None)
        totals = execute(
            db,
            "SELECT count(*), coalesce(sum(dropped_before), 0), coalesce(sum(over_budget), 0), min(captured_at),"
            " max(captured_at) FROM frames",
        ).fetchone()
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        views = execute(db, "SELECT count(*) FROM views").fetchone()[0]
        cells = _cell_totals(db) if has_table(db, "cells") else (0, 0, 0, 0)
        database_id = _database_id(db)
        tables = results_tables(db)
        version = version_of(db)
    except sqlite3.Error as exc:
        raise CommandError(f"{database}: cannot read the results database: {exc}") from None
    finally:
        db.close()
    report["database_id"] = database_id
    # deploy/pull.sh picks the tables to export by the schema version (names changed in 6).
    report["schema_version"] = version
    report["tables"] = tables
    report["last_run"] = last_run
    report["totals"] = {
        **dict(zip(["frames", "dropped", "over_budget", "first_frame_at", "last_frame_at"], totals, strict=True)),
        **dict(zip(["cells", "positives", "clusters", "open_cells"], cells, strict=True)),
        "views": views,
        "runs": runs,
    }
    report["set_aside"] = [str(path) for path in set_aside_databases(database)]
    report["database_bytes"] = _file_size(database) + _file_size(Path(f"{database}-wal"))
    report["snapshots"] = _folder_report(config.snapshot_dir, "*.jpg")
    report["crops"] = _folder_report(config.crop_dir, "*.png")
    usage = shutil.disk_usage(config.state_path)
    report["disk"] = {"free_bytes": usage.free, "total_bytes": usage.total}
    report["live"] = live_sockets(config)
    return report


def live_sockets(config: Any) -> dict[str, Any]:
    """Where the live views are, for `metascope live HOST` (which asks over ssh): the service's
    socket, whether it is there now, and where `doctor --capture N --live` run by this user serves."""
    socket = live_socket_path(config.state_path)
    return {"socket": str(socket), "serving": socket.is_socket(), "doctor_socket": str(doctor_socket_path())}


def _cell_totals(db: sqlite3.Connection) -> tuple[int, int, int, int]:
    """(cells, positive, clusters, open): closed cells, by their run's threshold, plus the cells an
    unfinished run follows (views stored, no row of their own yet)."""
    closed, positives, clusters = execute(
        db,
        "SELECT count(*), coalesce(sum(c.probability >= coalesce(r.threshold, 0.5)), 0), coalesce(sum(c.cluster), 0)"
        " FROM cells c LEFT JOIN runs r ON r.id = c.run_id",
    ).fetchone()
    still_open = execute(
        db,
        "SELECT count(*) FROM (SELECT DISTINCT v.run_id, v.track FROM views v"
        " WHERE v.run_id IN (SELECT id FROM runs WHERE ended_at IS NULL) AND v.track IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM cells c WHERE c.run_id = v.run_id AND c.track = v.track))",
    ).fetchone()[0]
    return closed + still_open, positives, clusters, still_open


def _mb(value: int) -> str:
    return f"{value / 1024 / 1024:.1f} MB"


def format_text(report: dict[str, Any]) -> str:
    lines = []
    live = report.get("service")
    run = report.get("last_run")
    if run:
        # A run without an end is live, or was killed (the next start closes it with its totals).
        ended = f"ended {run['ended_at']}" if run["ended_at"] else "still running, or stopped without closing"
        lines.append(
            f"last run:    {run['id']} started {run['started_at']}, {ended}"
            + (f" ({run['exit_reason']})" if run.get("exit_reason") else "")
        )
        lines.append(f"             model {run['model_name']} ({run['interpreter']}), source {run['source']}")
    if live:
        counters = live.get("counters", {})
        state = live["state"]
        if state == "running" and not live.get("alive"):
            state = "not running (the last status says running: killed or crashed?)"
        lines.append(
            f"service:     {state} (pid {live['pid']}, updated {live['updated_at']}), {live['fps']} fps, "
            f"{counters.get('frames', 0)} frames this run, {counters.get('cells', 0)} cells "
            f"({counters.get('open_cells', 0)} open), {counters.get('views', 0)} views, "
            f"{counters.get('dropped', 0)} dropped, "
            f"{counters.get('over_budget', 0)} over the {live['budget_ms']:g} ms budget, "
            f"{counters.get('source_failures', 0)} capture failures, {counters.get('unsaved_frames', 0)} unsaved"
        )
        latency = live.get("latency_ms", {})
        if latency:
            lines.append(
                "latency:     "
                + ", ".join(f"{stage} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for stage, v in latency.items())
                + " ms (p50/p99, last frames)"
            )
    totals = report["totals"]
    lines.append(
        f"totals:      {totals['runs']} runs, {totals['frames']} frames, {totals['cells']} cells "
        f"({totals['open_cells']} open), {totals['views']} views, {totals['positives']} positive and "
        f"{totals['clusters']} clusters of the closed cells"
    )
    lines.append(f"last frame:  {totals['last_frame_at'] or 'none'}")
    identity = report.get("database_id") or "not yet given one (starts with the next run)"
    lines.append(f"database:    {report['database']} ({_mb(report['database_bytes'])}; id {identity})")
    for aside in report["set_aside"]:
        lines.append(f"set aside:   {aside} (corrupt: kept, never written again; `sqlite3 FILE .recover`)")
    snapshots = report["snapshots"]
    lines.append(f"snapshots:   {snapshots['folder']} ({snapshots['files']} files, {_mb(snapshots['bytes'])})")
    crops = report["crops"]
    lines.append(f"crops:       {crops['folder']} ({crops['files']} files, {_mb(crops['bytes'])})")
    disk = report["disk"]
    lines.append(f"disk:        {_mb(disk['free_bytes'])} free of {_mb(disk['total_bytes'])}")
    if report["live"]["serving"]:
        lines.append(f"live view:   {report['live']['socket']} (on a desktop: metascope live HOST)")
    return "\n".join(lines)


def status(args: argparse.Namespace) -> int:
    report = gather(config_from_args(args))
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 0
