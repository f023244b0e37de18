"""`metascope run`: start the service (what systemd runs)."""

from __future__ import annotations

import argparse
import contextlib
import platform

from edge.commands.common import (
    UsageError,
    add_config_args,
    config_from_args,
    load_classifier,
    non_negative_int,
    positive_int,
)
from edge.paths import live_socket_path


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="run the service: capture, find cells, classify, log (what systemd starts)",
        description="Capture frames, find and classify every cell, log results to the state directory's "
        "database. Exit 0 on SIGTERM/SIGINT or when --max-frames is reached; 2 on a config or model "
        "error (systemd does not restart); 3 when the camera fails source.max_failures times in a row; "
        "4 when frames keep failing; 5 when the state directory or its database cannot be used.",
    )
    add_config_args(parser)
    parser.add_argument(
        "--source",
        metavar="SOURCE",
        help="replay:DIR_OR_GLOB, composed:CROPS_DIR, synthetic, still or picamera2 (overrides [source] kind)",
    )
    parser.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N classified frames")
    parser.add_argument("--model", help="NAME.tflite (overrides [model] path)")
    parser.add_argument(
        "--snapshot-every",
        type=non_negative_int,
        metavar="N",
        help="an annotated snapshot every N frames; 0: none on a schedule (overrides [snapshots] every_n_frames)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge.capture import open_source, parse_source_arg
    from edge.service.live import LiveView, run_status
    from edge.service.loop import Service, setup_logging

    config = config_from_args(args)
    if args.source:
        try:
            config = config.with_overrides("source", **parse_source_arg(args.source))
        except ValueError as exc:
            raise UsageError(f"--source: {exc}") from None
    if args.model:
        config = config.with_overrides("model", path=args.model)
    if args.snapshot_every is not None:
        config = config.with_overrides("snapshots", every_n_frames=args.snapshot_every)
    if config.source.kind == "replay" and not config.source.replay_path:
        raise UsageError('source.replay_path: a folder or glob is needed for kind = "replay"')
    if config.source.kind == "composed" and not config.source.composed_path:
        raise UsageError('source.composed_path: a folder of masked crops is needed for kind = "composed"')
    if config.source.composed_pair_fraction + config.source.composed_triple_fraction > 1:
        raise UsageError("source.composed_pair_fraction + source.composed_triple_fraction: at most 1 together")
    setup_logging()
    model = config.model
    classifier = load_classifier(model.path or None, model.threads, model.interpreter or None)
    source = open_source(config)
    title = f"{platform.node()}: {source.description} · {classifier.card.name}"
    live = LiveView(live_socket_path(config.state_path), title)
    service = Service(config, classifier, source, max_frames=args.max_frames, observer=live.publish)
    live.feed.status_source = run_status(service)
    with contextlib.suppress(OSError):  # the run says why it cannot use the folder (exit 5)
        config.state_path.mkdir(parents=True, exist_ok=True)
    with live:
        return service.run()
