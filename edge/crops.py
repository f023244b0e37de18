"""The masked crop of each tracked cell, kept as a PNG in the state directory's crops/ folder.

A crop is cut when the model first looks at a cell: the window `run` classifies, at the rig's
full resolution, with everything outside the cell's mask set to 0, which is the form of the
training crops. So a crop a person sorts into a label folder is ordinary `metascope-train fit`
input, and `metascope-train report` shows them sorted by probability. The cell's `tracks` row
names its crop. Crops live under their own size cap and free-disk floor (edge/capped_folder.py),
and are the first thing after snapshots to stop when the disk runs low.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from edge.capped_folder import CappedFolder, free_bytes, time_stamp_name
from edge.config import CropConfig
from edge.pipeline import ClosedCell, FrameResult
from edge.preprocess import cell_window

PNG_COMPRESS_LEVEL = 1  # mostly-zero crops compress well even at the fastest level


def crop_name(captured_at: float, run_id: int | None, track: int) -> str:
    return f"{time_stamp_name(captured_at)}_run{run_id}_track{track}.png"


def encode_png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


class CropKeeper:
    """Cuts and writes the crop of each cell the model looks at for the first time, and links
    it to the cell's row when the cell closes."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        config: CropConfig,
        window_px: int,
        free_space: Callable[[Path], int] = free_bytes,
    ):
        self.files = CappedFolder(folder, ".png", config.max_mb, config.min_free_mb, free_space)
        self.enabled = config.max_mb > 0
        self.window_px = window_px
        self._names: dict[int, str] = {}  # open cells' crops, by track number

    def keep(self, result: FrameResult, run_id: int | None) -> None:
        """Write the crops of the cells this frame viewed first (their first view, view 0)."""
        if not self.enabled:
            return
        for cell, found in zip(result.cells, result.detections, strict=True):
            if cell.view != 0 or cell.track in self._names:
                continue
            window = cell_window(result.frame.pixels, found.centroid_yx, self.window_px, found.mask, found.origin_yx)
            name = self.files.write(crop_name(result.frame.captured_at, run_id, cell.track), encode_png(window))
            if name is not None:
                self._names[cell.track] = name

    def link(self, closed: Sequence[ClosedCell]) -> list[ClosedCell]:
        """The closed cells with their crop's file name (None: none was kept)."""
        return [replace(cell, crop=self._names.pop(cell.track, None)) for cell in closed]
