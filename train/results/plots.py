"""The figures of a results report (PNG bytes): cells and positive fraction over time per host
and run, the probability histogram, per-stage latency, clusters and dropped frames."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a desktop's ssh session or in CI
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from train.results.pulled import PulledDatabase, number, parse_time

STAGES = ("capture_wait", "detect", "preprocess", "infer")
# Bin widths for counts over time: the first that gives at most MAX_BINS bins over the span.
BIN_WIDTHS = tuple(timedelta(seconds=s) for s in (1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400))
MAX_BINS = 60


def time_axis(axis: Any) -> None:
    """Dates without the clutter matplotlib's default puts on a span of seconds to weeks."""
    locator = mdates.AutoDateLocator()
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def png(figure: Any) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def bin_width(times: Sequence[datetime]) -> timedelta:
    span = max(times) - min(times) if times else timedelta(0)
    return next((width for width in BIN_WIDTHS if span / width <= MAX_BINS), BIN_WIDTHS[-1])


def binned(times: Sequence[datetime], width: timedelta) -> list[datetime]:
    """Each time floored to its bin's start."""
    epoch = datetime(1970, 1, 1, tzinfo=times[0].tzinfo) if times else None
    return [epoch + ((moment - epoch) // width) * width for moment in times]


def series_key(database: PulledDatabase, run_id: str) -> str:
    return f"{database.host} run {run_id}"


def cells_over_time(databases: Sequence[PulledDatabase]) -> bytes:
    """New cells per time bin (by when each was first seen) and the positive fraction among them,
    one line per host and run."""
    points: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    for database in databases:
        thresholds = database.thresholds()
        for track in database.rows("cells"):
            probability, seen = number(track.get("probability")), parse_time(track.get("first_seen_at", ""))
            if seen is not None and not np.isnan(probability):
                points[series_key(database, track["run_id"])].append(
                    (seen, probability >= thresholds.get(track["run_id"], 0.5))
                )
    figure, (count_axis, fraction_axis) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    width = bin_width([moment for series in points.values() for moment, _ in series])
    for key, series in sorted(points.items()):
        bins: dict[datetime, list[bool]] = defaultdict(list)
        for start, positive in zip(binned([m for m, _ in series], width), [p for _, p in series], strict=True):
            bins[start].append(positive)
        starts = sorted(bins)
        count_axis.plot(starts, [len(bins[s]) for s in starts], marker="o", markersize=3, label=key)
        fraction_axis.plot(starts, [float(np.mean(bins[s])) for s in starts], marker="o", markersize=3, label=key)
    count_axis.set(ylabel=f"new cells per {_width_text(width)}", title="Cells over time (by when each was first seen)")
    fraction_axis.set(ylabel="positive fraction", ylim=(-0.02, 1.02), xlabel="time (UTC)")
    if points:
        count_axis.legend(fontsize=8, loc="upper left")
    else:
        count_axis.text(0.5, 0.5, "no closed cells", ha="center", va="center", transform=count_axis.transAxes)
    time_axis(fraction_axis)
    return png(figure)


def probability_histogram(databases: Sequence[PulledDatabase]) -> bytes:
    figure, axis = plt.subplots(figsize=(10, 3.6))
    bins = np.linspace(0.0, 1.0, 41)
    for database in databases:
        values = [number(track.get("probability")) for track in database.rows("cells")]
        values = [value for value in values if not np.isnan(value)]
        if values:
            axis.hist(values, bins=bins, alpha=0.6, label=f"{database.host} ({len(values)} cells)")
    thresholds = {t for database in databases for t in database.thresholds().values()}
    for threshold in sorted(thresholds):
        axis.axvline(threshold, color="0.3", linestyle="--", linewidth=1)
    axis.set(xlabel="probability of the positive label (dashed: threshold)", ylabel="cells",
             title="Probability of each cell (the mean of its views' logits)")  # fmt: skip
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
    return png(figure)


def stage_latency(databases: Sequence[PulledDatabase]) -> bytes:
    """Per-stage latency of every frame, per host: box plots (whiskers 5-95 %)."""
    figure, axis = plt.subplots(figsize=(10, 3.8))
    data, labels = [], []
    for database in databases:
        frames = database.rows("frames")
        for stage in STAGES:
            values = [number(frame.get(f"{stage}_ms")) for frame in frames]
            values = [value for value in values if not np.isnan(value)]
            if values:
                data.append(values)
                labels.append(f"{database.host}\n{stage}")
    if data:
        axis.boxplot(data, whis=(5, 95), showfliers=False)
        axis.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    axis.set(ylabel="ms per frame", title="Latency per stage (box: quartiles, whiskers: 5-95 %)")
    return png(figure)


def clusters(databases: Sequence[PulledDatabase]) -> bytes:
    """Cell area, single cells against clusters (to tune detect.cluster_area_px), and the
    cluster fraction per host and run."""
    figure, (area_axis, share_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    areas: dict[bool, list[float]] = {False: [], True: []}
    shares: dict[str, list[bool]] = defaultdict(list)
    for database in databases:
        for track in database.rows("cells"):
            cluster = track.get("cluster") == "1"
            areas[cluster].append(number(track.get("area_px")))
            shares[series_key(database, track["run_id"])].append(cluster)
    every = [a for values in areas.values() for a in values if not np.isnan(a)]
    bins = np.linspace(min(every), max(every) + 1, 31) if every else 10
    for cluster, label in ((False, "single cell"), (True, "cluster")):
        if areas[cluster]:
            area_axis.hist(areas[cluster], bins=bins, alpha=0.6, label=f"{label} ({len(areas[cluster])})")
    area_axis.set(xlabel="area (px)", ylabel="cells", title="Area: single cells and clusters")
    if every:
        area_axis.legend(fontsize=8)
    keys = sorted(shares)
    share_axis.bar(range(len(keys)), [float(np.mean(shares[k])) for k in keys], color="C1")
    share_axis.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=7)
    share_axis.set(ylabel="fraction of cells", ylim=(0, 1), title="Clusters per host and run")
    return png(figure)


def dropped_frames(databases: Sequence[PulledDatabase]) -> bytes:
    """Frames dropped at the source (the loop was busy) and frames over budget, per time bin."""
    figure, axis = plt.subplots(figsize=(10, 3.6))
    series: dict[str, list[tuple[datetime, float, bool]]] = defaultdict(list)
    for database in databases:
        for frame in database.rows("frames"):
            moment = parse_time(frame.get("captured_at", ""))
            if moment is not None:
                series[series_key(database, frame["run_id"])].append(
                    (moment, number(frame.get("dropped_before"), 0.0), frame.get("over_budget") == "1")
                )
    width = bin_width([moment for points in series.values() for moment, _, _ in points])
    for key, points in sorted(series.items()):
        dropped: dict[datetime, float] = defaultdict(float)
        over: dict[datetime, int] = defaultdict(int)
        for start, (_, count, late) in zip(binned([p[0] for p in points], width), points, strict=True):
            dropped[start] += count
            over[start] += late
        starts = sorted(dropped)
        axis.plot(starts, [dropped[s] for s in starts], marker="o", markersize=3, label=f"{key}: dropped")
        axis.plot(starts, [over[s] for s in starts], linestyle="--", label=f"{key}: over budget")
    axis.set(ylabel=f"frames per {_width_text(width)}", xlabel="time (UTC)", title="Dropped and late frames")
    if series:
        axis.legend(fontsize=8)
    time_axis(axis)
    return png(figure)


def _width_text(width: timedelta) -> str:
    seconds = int(width.total_seconds())
    for unit, size in (("day", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


FIGURES = (
    ("Cells and positive fraction over time", cells_over_time),
    ("Latency per stage", stage_latency),
    ("Clusters", clusters),
    ("Dropped frames", dropped_frames),
)

# Every name on a figure is data (host folders, run ids, model names): shown as written. With
# mathtext, text between two $ is parsed as a formula and an unbalanced one stops every figure;
# a user's matplotlibrc may also turn on usetex, which would hand the names to LaTeX.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def draw_figures(
    databases: Sequence[PulledDatabase], models: Sequence[tuple[str, Sequence[PulledDatabase]]]
) -> list[tuple[str, bytes]]:
    """(title, PNG bytes) of every figure, the probability histogram once per model (``models``:
    the databases split by model), with every text drawn as plain text."""
    with matplotlib.rc_context(PLAIN_TEXT):
        figures = [(title, draw(databases)) for title, draw in FIGURES]
        histograms = [(f"Probability histogram: model {model}", probability_histogram(part)) for model, part in models]
        histograms = histograms or [("Probability histogram", probability_histogram(databases))]
        return [figures[0], *histograms, *figures[1:]]
