"""`run` keeps the masked crop of each tracked cell (issue 13.5): one per cell, named by its
cells row, masked like the training crops, under its size cap and free-disk floor."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from fakes import make_config
from PIL import Image

from edge.capture import open_source
from edge.classify.classifier import Classifier
from edge.classify.preprocess import is_premasked
from edge.notify import Notifier
from edge.service.loop import EXIT_OK, Service


def run(config, classifier: Classifier, frames: int, free_space=None) -> Service:
    extra = {} if free_space is None else {"free_space": free_space}
    service = Service(config, classifier, open_source(config), max_frames=frames, notifier=Notifier(address=""),
                      **extra)  # fmt: skip
    assert service.run() == EXIT_OK
    return service


def track_crops(database: Path) -> list[str | None]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT crop FROM cells ORDER BY id")]


def test_each_cell_gets_one_masked_crop_named_by_its_row(classifier, tmp_path: Path) -> None:
    # A budget no frame reaches: crops beyond 4 a frame come with the cells' next views, which a
    # loaded machine's frames over the default budget would defer past the 5 frames run here.
    config = make_config(tmp_path, source={"kind": "still", "synthetic_cells": 6}, pipeline={"budget_ms": 60_000.0})
    service = run(config, classifier, 5)
    names = track_crops(config.database_path)
    files = sorted(path.name for path in config.crop_dir.glob("*.png"))
    assert len(names) >= 4 and None not in names
    assert sorted(names) == files, "one crop per cell, each named by its cell's row"
    side = service.pipeline.window_px
    for name in names:
        pixels = np.asarray(Image.open(config.crop_dir / name))
        assert pixels.shape == (side, side) and pixels.dtype == np.uint8
        assert is_premasked(pixels) and pixels.max() > 0, "the cell on a black background, as training crops are"


def test_crops_stay_under_their_cap_and_stop_on_a_low_disk(classifier, tmp_path: Path) -> None:
    capped = make_config(tmp_path / "capped", source={"kind": "synthetic"}, crops={"max_mb": 0.02})
    run(capped, classifier, 6)
    files = list(capped.crop_dir.glob("*.png"))
    assert files and sum(path.stat().st_size for path in files) <= 0.02 * 1024 * 1024
    assert len(files) < len(track_crops(capped.database_path)), "the oldest were deleted to make room"

    low = make_config(tmp_path / "low", source={"kind": "synthetic"}, crops={"min_free_mb": 500.0})
    run(low, classifier, 3, free_space=lambda _path: 200 * 1024 * 1024)  # room for results only
    assert track_crops(low.database_path) and set(track_crops(low.database_path)) == {None}
    assert not low.crop_dir.exists()

    off = make_config(tmp_path / "off", source={"kind": "synthetic"}, crops={"max_mb": 0.0})
    run(off, classifier, 2)
    assert not off.crop_dir.exists()


def test_a_frame_writes_a_bounded_number_of_crops(classifier, tmp_path: Path) -> None:
    """A new field every frame (every cell new): at most MAX_CROPS_PER_FRAME crops a frame, so
    crops never cost a frame more than that; in a still field the rest follow at later views."""
    from edge.record.crops import MAX_CROPS_PER_FRAME

    config = make_config(tmp_path, source={"kind": "synthetic", "synthetic_cells": 10})
    run(config, classifier, 3)
    names = track_crops(config.database_path)
    assert len(names) > 3 * MAX_CROPS_PER_FRAME
    assert len([name for name in names if name]) == len(list(config.crop_dir.glob("*.png"))) == 3 * MAX_CROPS_PER_FRAME
