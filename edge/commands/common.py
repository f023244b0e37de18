"""What the service-side commands share: --config/--state-dir and loading the config."""

from __future__ import annotations

import argparse
from dataclasses import replace

from edge.config import Config, ConfigError, load_config


class CommandError(Exception):
    """A command failed for a reason outside the user's arguments (exit 1), e.g. no database."""


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config (default: /etc/metascope/metascope.toml if present, else built-in defaults)",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="override the config's state_dir")


def config_from_args(args: argparse.Namespace) -> Config:
    """The config the arguments name; a ConfigError becomes a usage error (exit 2)."""
    from edge.cli import UsageError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if getattr(args, "state_dir", None):
        config = replace(config, state_dir=args.state_dir)
    return config
