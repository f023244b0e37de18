"""A pulled results folder as one self-contained HTML page: a table per host and run, the PNG
figures of train/results/plots.py and a gallery of cell crops sorted by probability. Every
image is embedded (data: URLs), so the page can be mailed or archived as one file."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge import __version__
from train.results.by_model import split_by_model
from train.results.gallery import Budget, data_url, gallery, gallery_section
from train.results.plots import draw_figures
from train.results.pulled import PulledDatabase, PulledFolder, number

DEFAULT_GALLERY = 200  # crops shown at most: a page of thousands of images is no longer read
DEFAULT_MAX_MB = 20.0  # the gallery's images at most (before base64): a page that can still be mailed
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; } td.text { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.gallery { display: flex; flex-wrap: wrap; gap: 6px; }
.tile { width: 112px; font-size: 0.7em; text-align: center; }
.tile img { width: 104px; height: 104px; image-rendering: pixelated; border: 3px solid #60dcff; }
.tile.positive img { border-color: #ff3c3c; }
.tile .file { font-family: monospace; word-break: break-all; color: #555; }
"""


def run_rows(databases: Sequence[PulledDatabase]) -> list[str]:
    """One table row per run: when, model, frames, cells, positives, clusters, dropped."""
    rows = []
    for database in databases:
        thresholds = database.thresholds()
        tracks_by_run: dict[str, list[dict[str, str]]] = {}
        for track in database.rows("cells"):
            tracks_by_run.setdefault(track["run_id"], []).append(track)
        frames_by_run: dict[str, list[dict[str, str]]] = {}
        for frame in database.rows("frames"):
            frames_by_run.setdefault(frame["run_id"], []).append(frame)
        for run in database.rows("runs"):
            tracks = tracks_by_run.get(run["id"], [])
            frames = frames_by_run.get(run["id"], [])
            probabilities = [number(t.get("probability")) for t in tracks]
            called = [p for p in probabilities if not np.isnan(p)]
            positives = sum(p >= thresholds.get(run["id"], 0.5) for p in called)
            clusters = sum(t.get("cluster") == "1" for t in tracks)
            dropped = sum(number(f.get("dropped_before"), 0.0) for f in frames)
            fraction = f"{positives / len(called):.1%}" if called else "-"
            cells = [
                ("text", database.host), ("text", database.database_id[:8]), ("", run["id"]),
                ("text", run.get("started_at", "")[:19]), ("text", (run.get("ended_at") or "not ended")[:19]),
                ("text", run.get("model_name", "")), ("", str(len(frames))), ("", str(len(tracks))),
                ("", str(positives)), ("", fraction), ("", str(clusters)), ("", f"{dropped:.0f}"),
            ]  # fmt: skip
            rows.append("<tr>" + "".join(f'<td class="{c}">{html.escape(v)}</td>' for c, v in cells) + "</tr>")
    return rows


def not_read_section(not_read: Sequence[str]) -> list[str]:
    """The files the page could not use, each with why (empty when there were none)."""
    if not not_read:
        return []
    items = "".join(f"<li>{html.escape(problem)}</li>" for problem in not_read)
    return ["<h2>Could not read</h2>", f"<p>{len(not_read)} file(s) or row(s) left out of this page:</p>",
            f"<ul>{items}</ul>"]  # fmt: skip


@dataclass
class Report:
    page: str
    not_read: list[str]  # what was left out and why, for the page and stderr


Models = Sequence[tuple[str, list[PulledDatabase]]]  # (model, its databases' rows), split_by_model's


def figures_section(databases: Sequence[PulledDatabase], models: Models) -> list[str]:
    return [
        f'<figure><img alt="{html.escape(title)}" src="{data_url("image/png", image)}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, image in draw_figures(databases, models)
    ]


def galleries(models: Models, limit: int, max_mb: float, not_read: list[str]) -> list[str]:
    """A gallery per model (at most ``limit`` crops each), all within ``max_mb`` of images."""
    budget = Budget(int(max_mb * 2**20))
    made = [gallery(model, part, limit, budget, not_read) for model, part in models]
    return [
        "<p>Red border: called positive; C: cluster. Each crop is what the Pi classified (black outside the "
        "cell's mask), with its file below it. <code>metascope-train sort-crops RESULTS_DIR DATA_DIR</code> "
        "copies the crops into DATA_DIR/&lt;label&gt;/&lt;group&gt;/ by the Pi's call; move the ones it got "
        "wrong, and <code>metascope-train fit DATA_DIR</code> takes them as training data.</p>",
        *(line for one in made for line in gallery_section(one, max_mb)),
    ]


def build_page(
    pulled: PulledFolder,
    source: Path | str,
    gallery_limit: int = DEFAULT_GALLERY,
    max_mb: float = DEFAULT_MAX_MB,
) -> Report:
    databases = pulled.databases
    models = split_by_model(databases)
    hosts = html.escape(", ".join(sorted({database.host for database in databases})))
    not_read = list(pulled.not_read)
    header = ("host", "database", "run", "started (UTC)", "ended", "model", "frames", "cells", "positive",
              "positive fraction", "clusters", "dropped frames")  # fmt: skip
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>metascope results: {hosts}</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<h1>metascope results: {hosts}</h1>",
            f"<p>From {html.escape(str(source))}, made {made} by metascope-train {__version__}. A cell is one "
            "tracked cell (a row of <code>cells</code>); its probability is the mean of its views' logits.</p>",
            "<h2>Runs</h2>",
            "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>",
            *run_rows(databases),
            "</table>",
            "<h2>Figures</h2>",
            *figures_section(databases, models),
            *galleries(models or [("(none)", list(databases))], gallery_limit, max_mb, not_read),
            *not_read_section(not_read),
            "</body></html>",
        ]
    )
    return Report(page, not_read)
