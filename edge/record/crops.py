"""The masked crop of each tracked cell, kept as a PNG in the state directory's crops/ folder.

A crop is cut when the model looks at a cell that has none yet (its first view, or a later one
when the frame already kept MAX_CROPS_PER_FRAME): the window `run` classifies, at the rig's
full resolution, with everything outside the cell's mask set to 0, which is the form of the
training crops. So a crop a person sorts into a label folder is ordinary `metascope-train fit`
input, and `metascope-train report` shows them sorted by probability. The cell's row in the
`cells` table names its crop. Crops live under their own size cap and free-disk floor (edge/record/capped_folder.py),
and are the first thing after snapshots to stop when the disk runs low.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from edge.classify.preprocess import cell_window
from edge.config import CropConfig
from edge.record.capped_folder import CappedFolder, free_bytes, time_stamp_name
from edge.records import ClosedCell, FrameResult

PNG_COMPRESS_LEVEL = 1  # mostly-zero crops compress well even at the fastest level
# About 0.5 ms a crop (encode and write) on the dev VM: a new field of 20 cells cost 10-20 ms more
# per frame (`metascope bench pipeline --field new`). A still field, the common case, has few new
# cells; this bound keeps a new one from costing more, and the cells left over get their crop at
# one of their next views (K of them, frames apart), where the cell is the same.
MAX_CROPS_PER_FRAME = 4


def crop_name(captured_at: float, run_id: int | None, track: int) -> str:
    return f"{time_stamp_name(captured_at)}_run{run_id}_track{track}.png"


def encode_png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


class CropKeeper:
    """Cuts and writes the crop of each cell the model looks at (once per cell), and links it
    to the cell's row when the cell closes."""

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
        """Write the crops of the cells this frame viewed that have none yet, first views first."""
        if not self.enabled:
            return
        due = [
            (cell, found)
            for cell, found in zip(result.detections, result.found, strict=True)
            if cell.view is not None and cell.track not in self._names
        ]
        due.sort(key=lambda pair: pair[0].view)
        for cell, found in due[:MAX_CROPS_PER_FRAME]:
            window = cell_window(result.frame.pixels, found.centroid_yx, self.window_px, found.mask, found.origin_yx)
            name = self.files.write(crop_name(result.frame.captured_at, run_id, cell.track), encode_png(window))
            if name is not None:
                self._names[cell.track] = name

    def link(self, closed: Sequence[ClosedCell]) -> list[ClosedCell]:
        """The closed cells with their crop's file name (None: none was kept)."""
        return [replace(cell, crop=self._names.pop(cell.track, None)) for cell in closed]
