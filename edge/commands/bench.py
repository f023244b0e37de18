"""`metascope bench`: the classifier alone, the service loop end to end, or the loop with the live
view watched, timed (JSON out)."""

from __future__ import annotations

import argparse

from edge.commands.common import add_model_args, folder_arg, load_classifier, positive_int
from edge.errors import ExitCode, UsageError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="benchmarks, JSON out (medians and p99 in ms)")
    parser.add_argument(
        "what",
        choices=["model", "pipeline", "live", "clusters"],
        help="model: classifier latency per cell and per batch; pipeline: the service loop end to end "
        "on synthetic frames (per-stage latency, resident memory); live: the loop with nobody watching and "
        "with a client taking the live view (--client-hz); clusters: how often the cluster flag is right, per "
        "culture condition, on frames composed from real crops (--data)",
    )
    add_model_args(parser)
    parser.add_argument("--calls", type=positive_int, default=1000, help="model: single-cell calls to time")
    parser.add_argument("--batch", type=positive_int, default=32, help="model: cells per batched call")
    parser.add_argument("--cells", type=positive_int, default=20, help="pipeline: cells per frame")
    parser.add_argument("--frames", type=positive_int, default=2000, help="pipeline: frames to time")
    parser.add_argument("--width", type=positive_int, default=640, help="pipeline: frame width")
    parser.add_argument("--height", type=positive_int, default=480, help="pipeline: frame height")
    parser.add_argument(
        "--field",
        choices=["new", "still", "moving", "composed"],
        default="new",
        help="pipeline: every frame a new synthetic field (each cell new every frame: the most model calls), "
        "one still field, a stage that moves every --move-every frames, or real crops (--crops) composed into "
        "fields of --cells cells held --move-every frames each (default: new)",
    )
    parser.add_argument("--crops", help="pipeline --field composed: a folder of masked single-cell crops")
    parser.add_argument("--move-every", type=positive_int, default=50, help="pipeline --field moving: frames per field")
    parser.add_argument(
        "--client-hz", type=float, default=10.0, help="live: frames a second the client asks for (default 10)"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=2, help="live: runs of each (unwatched, watched), alternating"
    )
    parser.add_argument("--data", type=folder_arg, help="clusters: masked single-cell crops, DATA/<label>/<condition>/")
    parser.add_argument(
        "--per-condition", type=positive_int, default=60, help="clusters: crops sampled per condition (default 60)"
    )
    parser.add_argument(
        "--group-by",
        metavar="REGEX",
        help="clusters: the condition is this expression's first group on the crop's path "
        "(default: the folder below each label folder)",
    )
    parser.add_argument(
        "--flag-rate",
        type=float,
        default=0.05,
        help="clusters: the learnt rule's threshold, as the share of its training single cells it flags (default 0.05)",
    )
    parser.add_argument(
        "--write-rule", metavar="PATH", help="clusters: also learn the rule from every condition, and write it"
    )
    parser.add_argument("--out", help="also write the JSON here")
    parser.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    from edge.commands.benchmarks import bench_model_threads, bench_pipeline, write_json

    if args.what == "clusters":
        return bench_clusters_command(args)
    if args.what == "pipeline" and (args.field == "composed") != bool(args.crops):
        raise UsageError("--crops DIR goes with --field composed (and --field composed needs it)")
    if args.what == "model":
        result = bench_model_threads(
            lambda threads: load_classifier(args.model, threads, args.interpreter),
            args.threads,
            calls=args.calls,
            batch=args.batch,
        )
    else:
        classifier = load_classifier(args.model, args.threads, args.interpreter)
        settings = {"cells": args.cells, "frames": args.frames, "width": args.width, "height": args.height,
                    "rss_every": 500, "field": args.field, "move_every": args.move_every,
                    "crops": args.crops}  # fmt: skip
        if args.what == "live":
            from edge.commands.bench_live import bench_live

            result = bench_live(classifier, args.client_hz, args.rounds, **settings)
        else:
            result = bench_pipeline(classifier, **settings)
    text = write_json(result, args.out)
    # Written to a file: one line to read (the JSON is there); else the JSON, for a pipe.
    print(f"bench {args.what}: {headline(args.what, result)}; wrote {args.out}" if args.out else text)
    return ExitCode.OK


def headline(what: str, result: dict) -> str:
    """The figures a person reads first, in one line."""
    if what == "model":
        return "; ".join(
            f"{run['threads']} thread(s): one cell p50/p99 {run['single_cell']['p50_ms']:.3f}/"
            f"{run['single_cell']['p99_ms']:.3f} ms, batched "
            + ", ".join(f"{v['per_cell_p50_ms']:.3f}" for k, v in run.items() if k.startswith("batch_"))
            + " ms a cell (p50)"
            for run in result["runs"]
        )
    if what == "live":
        added = result["added_by_the_client"]
        return ", ".join(f"{key} {value:+.2f}" for key, value in added.items()) + " added by the client"
    e2e = result["end_to_end"]
    return (
        f"{result['frames']} frames, end to end p50/p99 {e2e['p50_ms']:.1f}/{e2e['p99_ms']:.1f} ms, "
        f"{result['views_per_frame']['mean']:.1f} model calls a frame, "
        f"peak resident {result['resident_mb']['max']:.0f} MB"
    )


def bench_clusters_command(args: argparse.Namespace) -> int:
    import re
    import sys

    from edge.commands.bench_clusters import bench_clusters, summary_line
    from edge.commands.benchmarks import write_json

    if args.data is None:
        raise UsageError("bench clusters needs --data DIR: masked single-cell crops in label folders")
    if args.group_by:
        try:
            re.compile(args.group_by)
        except re.error as exc:
            raise UsageError(f"--group-by {args.group_by!r} is not a valid regular expression: {exc}") from None
    try:
        result = bench_clusters(args.data, args.per_condition, args.group_by, flag_rate=args.flag_rate,
                                write_rule=args.write_rule)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(write_json(result, args.out))
    print(f"bench clusters: {summary_line(result)}", file=sys.stderr)
    return ExitCode.OK
