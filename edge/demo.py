"""`make demo`: the service on synthetic frames, end to end, then `metascope status`.

Runs `metascope run` for a bounded number of synthetic frames of a still field (20 cells,
clusters included, sensor noise and jitter each frame; the stage moves to a new field every 50
frames) with the given model: each cell is followed, classified a few times and stored once.
It writes a real database and annotated snapshots into the desktop's default state directory
(./var), so a plain `metascope status` or `metascope export` afterwards finds them, prints the
status summary and says where everything is. Needs no camera, no network and no tensorflow (the Makefile
trains the tiny synthetic model first only when the shipped model is absent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli import main as metascope
from edge.config import DESKTOP_STATE_DIR

DEMO_DIR = Path("var/demo")
DEMO_CONFIG = """\
# Written by `make demo` (edge/demo.py). Any key of systemd/metascope.example.toml may go here.
state_dir = "{state_dir}"

[source]
kind = "still"
synthetic_cells = 20
still_move_every = 50

[store]
min_free_mb = 10.0

[snapshots]
every_n_frames = 25
on_cluster = true
max_mb = 20.0
min_free_mb = 50.0

[service]
summary_interval_s = 5.0
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="NAME.tflite with its card")
    parser.add_argument("--frames", type=int, default=200, help="synthetic frames to classify (default 200)")
    args = parser.parse_args(argv)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    # The desktop default, not a demo folder of its own: the commands the README shows next
    # (status, export) then need no --config. Always ./var, never default_state_dir(): on a Pi
    # that is the service's own /var/lib/metascope, which a demo must not write into.
    state_dir = Path(DESKTOP_STATE_DIR)
    config = DEMO_DIR / "metascope.toml"
    config.write_text(DEMO_CONFIG.format(state_dir=state_dir))
    print(f"demo: metascope run --config {config} --model {args.model} --max-frames {args.frames}", file=sys.stderr)
    code = metascope(["run", "--config", str(config), "--model", args.model, "--max-frames", str(args.frames)])
    if code != 0:
        return code
    print()
    metascope(["status", "--state-dir", str(state_dir)])
    print(
        f"\ndatabase:  {state_dir / 'metascope.db'}  (sqlite3; tables cells: one row per cell, views: one per"
        "\n           model call on a cell, frames, runs)"
        f"\nsnapshots: {state_dir / 'snapshots'}  (annotated JPEGs: red = positive, cyan = negative, thick = cluster)"
        f"\nexport:    {metascope_command()} export --state-dir {state_dir} --table cells > cells.csv"
    )
    return 0


def metascope_command() -> str:
    """How to run `metascope` from here: the script beside this Python (make demo's .venv-edge has
    one; .venv may not exist yet), else this Python with -m edge."""
    python = Path(sys.executable)
    script = python.parent / "metascope"
    if not script.is_file():
        return f"{python} -m edge"
    try:
        return str(script.relative_to(Path.cwd()))  # .venv-edge/bin/metascope, as make demo runs it
    except ValueError:
        return str(script)


if __name__ == "__main__":
    sys.exit(main())
