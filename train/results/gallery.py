"""The report's galleries: one per model, the crops of its cells highest probability first,
each tile naming the crop's file (the one to copy, or that sort-crops copies) and its path in
the pulled folder. What the page embeds is bounded: each crop a thumbnail, all of them within a
budget shared by the galleries."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from train.results.crops import NotACrop, thumbnail_png
from train.results.pulled import PulledDatabase, Unreadable, number


def data_url(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


@dataclass
class Budget:
    """Bytes of images the page may still embed."""

    left: int

    def take(self, size: int) -> bool:
        self.left -= size
        return self.left >= 0


@dataclass
class Gallery:
    model: str
    tiles: list[str] = field(default_factory=list)
    crops: int = 0  # cells with a pulled crop, shown or not
    over_budget: int = 0  # tiles left out when the images reached --max-mb
    unreadable: int = 0  # crops named under "Could not read"

    def summary(self, max_mb: float) -> str:
        shown = len(self.tiles)
        text = f"all {shown}" if shown == self.crops else f"{shown} of {self.crops}, evenly spaced in that order"
        if self.unreadable:
            text += f"; {self.unreadable} could not be read (named under Could not read)"
        if self.over_budget:
            text += f"; {self.over_budget} crop(s) left out: the page's images reached --max-mb {max_mb:g}"
        return text


def tile(database: PulledDatabase, track: dict[str, str], path, image: bytes, positive: bool) -> str:
    """One crop: its probability and the rig's call, where it was seen, and its file."""
    label = track.get("label") or ""
    caption = f"{number(track.get('probability')):.3f} {label}{' C' if track.get('cluster') == '1' else ''}"
    where = f"{database.host} run {track['run_id']} cell {track.get('track', '?')}"
    relative = str(path.relative_to(database.root))
    return (
        f'<div class="tile{" positive" if positive else ""}"><img alt="{html.escape(path.name)}" '
        f'title="{html.escape(relative)}" src="{data_url("image/png", image)}"><br>{html.escape(caption)}<br>'
        f'{html.escape(where)}<br><span class="file">{html.escape(path.name)}</span></div>'
    )


def gallery(
    model: str, databases: Sequence[PulledDatabase], limit: int, budget: Budget, not_read: list[str]
) -> Gallery:
    """Tiles of ``databases``' cells with a pulled crop, highest probability first; when there are
    more than ``limit``, evenly spaced ones along that order, so every part of the range shows.
    Each crop is a thumbnail; the tiles stop where ``budget`` runs out (the summary says how many
    that left out). A crop that cannot be shown is named in ``not_read``."""
    cells = []
    for database in databases:
        thresholds = database.thresholds()
        for track in database.rows("cells"):
            path = database.crop_path(track)
            probability = number(track.get("probability"))
            if path is not None and not np.isnan(probability):
                cells.append((probability, database, track, path, thresholds.get(track["run_id"], 0.5)))
    cells.sort(key=lambda cell: -cell[0])
    shown = cells
    if len(cells) > limit:
        shown = [cells[int(i)] for i in np.linspace(0, len(cells) - 1, limit).round().astype(int)]
    made = Gallery(model, crops=len(cells))
    for index, (probability, database, track, path, threshold) in enumerate(shown):
        try:
            image = thumbnail_png(database.read_crop(path))
        except (Unreadable, NotACrop) as exc:
            not_read.append(f"{path.relative_to(database.root)}: {exc}")
            made.unreadable += 1
            continue
        if not budget.take(len(image)):
            made.over_budget = len(shown) - index
            break
        made.tiles.append(tile(database, track, path, image, probability >= threshold))
    return made


def gallery_section(made: Gallery, max_mb: float) -> list[str]:
    return [
        f"<h2>Cells of model {html.escape(made.model)}, highest probability first</h2>",
        f"<p>Crops shown: {made.summary(max_mb)}.</p>",
        '<div class="gallery">',
        *(made.tiles or ["<p>No crops were pulled (a Pi older than crops, or pulled with --no-crops).</p>"]),
        "</div>",
    ]
