"""`metascope-train report`: a folder deploy/pull.sh wrote (one host or many), or the PostgreSQL
database `pull.sh --into` fills, as one self-contained HTML page: runs, figures over time,
latency, clusters, dropped frames and a gallery of cell crops sorted by probability."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from edge.commands.common import folder_arg, positive_int
from edge.errors import CommandError, ExitCode, UsageError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="an HTML page of pulled results: plots over time and a gallery of cell crops",
        description="Read RESULTS_DIR as deploy/pull.sh writes it (HOST/<database id>/{cells,views,frames,runs}.csv, "
        "snapshots/, crops/; one host or many) and write one self-contained HTML page with PNG figures "
        "(cells and positive fraction over time per host and run, probability histogram, latency per stage, "
        "clusters, dropped frames) and the cells' crops sorted by probability. RESULTS_DIR may also be the "
        "PostgreSQL database deploy/pull.sh --into fills (postgresql://USER@HOST:PORT/DB, or "
        "postgresql://USER@/DB?host=/socket/dir&port=N), with --crops-dir the folder its --crops-dir named.",
    )
    parser.add_argument("results_dir", type=results_arg, metavar="RESULTS_DIR")
    parser.add_argument(
        "--out",
        type=Path,
        help="the HTML file to write (default: RESULTS_DIR/report.html; from PostgreSQL: CROPS_DIR/report.html, "
        "else ./report.html)",
    )
    parser.add_argument(
        "--crops-dir",
        type=folder_arg,
        metavar="CROPS_DIR",
        help="from PostgreSQL: the folder pull.sh --crops-dir filled (CROPS_DIR/HOST/<database id>/crops/); "
        "without it the page has no crops",
    )
    parser.add_argument(
        "--gallery",
        type=positive_int,
        default=None,
        metavar="N",
        help="show at most N crops, evenly spaced along the probability order (default 200)",
    )
    parser.add_argument(
        "--max-mb",
        type=positive_float,
        default=None,
        metavar="MB",
        help="the gallery's images at most MB megabytes; each crop is a thumbnail (default 20)",
    )
    parser.set_defaults(handler=report)


def is_postgres_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def results_arg(text: str) -> Path | str:
    """A pulled folder (checked while parsing), or a PostgreSQL URL as given."""
    return text if is_postgres_url(text) else folder_arg(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def write_page(out: Path, page: str) -> None:
    """``page`` into ``out`` through a temporary file of its own beside it: created exclusively
    (mkstemp), so a name planted in a folder others can write (a symlink to a file of the user's)
    is never written through; a page that failed half way never replaces the last good one."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600 would hide the page from others
            file.write(page)
        os.replace(temporary, out)  # a symlink at ``out`` is replaced, never followed
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise CommandError(f"cannot write {out}: {exc}") from None


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def report(args: argparse.Namespace) -> int:
    from train.results.pulled import read_pulled, read_pulled_postgres
    from train.results.pulled_postgres import without_password
    from train.results.report import DEFAULT_GALLERY, DEFAULT_MAX_MB, build_page

    if isinstance(args.results_dir, Path):
        if args.crops_dir is not None:
            raise UsageError("--crops-dir goes with a PostgreSQL URL: a pulled folder holds its own crops")
        pulled, source = read_pulled(args.results_dir), str(args.results_dir)
        out = args.out or args.results_dir / "report.html"
    else:
        pulled, source = read_pulled_postgres(args.results_dir, args.crops_dir), without_password(args.results_dir)
        out = args.out or (args.crops_dir or Path()) / "report.html"
    made = build_page(pulled, source, args.gallery or DEFAULT_GALLERY, args.max_mb or DEFAULT_MAX_MB)
    write_page(out, made.page)
    for problem in made.not_read:
        print(f"metascope-train report: could not read {problem}", file=sys.stderr)
    hosts = sorted({database.host for database in pulled.databases})
    print(f"report: {out} ({len(pulled.databases)} database(s) of {', '.join(hosts)})")
    return ExitCode.OK
