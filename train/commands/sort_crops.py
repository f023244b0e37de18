"""`metascope-train sort-crops PULLED DEST`: the crops a rig kept, copied into DEST/<label>/<group>/
by the rig's call, for a person to correct by moving files before `metascope-train fit DEST`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.commands.common import folder_arg
from edge.errors import CommandError, ExitCode


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sort-crops",
        help="copy a pulled folder's crops into label folders by the rig's call, to correct and fit",
        description="Copy every crop in PULLED (a folder deploy/pull.sh wrote) into DEST/<label>/<group>/<file>: "
        "the label is the rig's call, the group one run (<host>_<database id>_run<id>), the training layout of "
        "`metascope-train fit DEST`. PULLED is only read. DEST/manifest.csv lists each crop copied with the rig's "
        "call; a crop listed there is never copied again, so move the crops the rig called wrong into the other "
        "label folder (or delete them) and sort again after the next pull: only new crops are added.",
    )
    parser.add_argument("pulled", type=folder_arg, metavar="PULLED")
    parser.add_argument("dest", type=Path, metavar="DEST", help="the training folder to sort into (not inside PULLED)")
    parser.add_argument("--model", metavar="NAME", help="only the crops of runs of this model (its card name)")
    parser.set_defaults(handler=sort_crops)


def sort_crops(args: argparse.Namespace) -> int:
    from train.results.pulled import read_pulled
    from train.results.sort_crops import MANIFEST, sort_crops

    try:
        done = sort_crops(read_pulled(args.pulled), args.pulled, args.dest, args.model)
    except OSError as exc:  # FileExistsError is a crop's own problem; this is DEST failing (full, read-only)
        raise CommandError(f"cannot write into {args.dest}: {exc}") from None
    for problem in done.not_read:
        print(f"metascope-train sort-crops: could not read {problem}", file=sys.stderr)
    labels = ", ".join(f"{label}: {count}" for label, count in sorted(done.copied.items()))
    print(
        f"sort-crops: {sum(done.copied.values())} crop(s) copied into {args.dest}{f' ({labels})' if labels else ''}, "
        f"{done.already} already sorted (listed in {args.dest / MANIFEST}). Move each crop the rig called wrong "
        f"into the other label folder, then: metascope-train fit {args.dest} --out models/NAME"
    )
    return ExitCode.FAILED if done.not_read else ExitCode.OK
