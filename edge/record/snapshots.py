"""Annotated JPEG snapshots of frames: boxes coloured by label, probability printed. The live view
(edge/service/live.py) sends frames drawn by the same code.

They live in the state directory's snapshots/ folder under their own size cap (oldest deleted
first) and are the first thing to stop when the disk runs low.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from edge.config import SnapshotConfig
from edge.record.capped_folder import CappedFolder, free_bytes, time_stamp_name
from edge.records import FrameResult

__all__ = ["SnapshotWriter", "annotate", "annotated_jpeg", "free_bytes"]

POSITIVE_COLOUR = (255, 60, 60)
NEGATIVE_COLOUR = (60, 220, 255)


def annotate(result: FrameResult) -> Image.Image:
    """The frame in colour with each cell's box (red: positive, cyan: negative; clusters drawn
    with a double line) and its probability."""
    image = Image.fromarray(result.frame.pixels).convert("RGB")
    draw = ImageDraw.Draw(image)
    size = label_size(image.height)
    for cell in result.detections:
        y0, x0, y1, x1 = cell.bbox
        colour = POSITIVE_COLOUR if cell.positive else NEGATIVE_COLOUR
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=3 if cell.cluster else 1)
        text = f"{cell.probability:.2f}" + (" C" if cell.cluster else "")
        draw_label(image, (x0 + 2, max(y0 - size - 4, 0)), text, colour, size)
    return image


def label_size(height: int) -> int:
    """Label font size in pixels: readable in a snapshot viewed whole (20 px on a 640x480 frame,
    digits about 14 px high; the old bitmap font's were 8)."""
    return max(16, height // 24)


@functools.cache
def label_font(size: int) -> ImageFont.FreeTypeFont | None:
    """Pillow's own scalable font at ``size`` (Pillow 10.1+); None where it has only its small
    bitmap font (Bookworm's apt Pillow 9.4), which ``draw_label`` scales up instead."""
    try:
        font = ImageFont.load_default(size=size)  # type: ignore[call-arg]
    except TypeError:
        return None
    return font if isinstance(font, ImageFont.FreeTypeFont) else None


def draw_label(image: Image.Image, xy: tuple[int, int], text: str, colour: tuple[int, int, int], size: int) -> None:
    """``text`` in ``colour`` at ``xy``, ``size`` pixels high, outlined in black so it reads on any background."""
    font = label_font(size)
    if font is not None:
        ImageDraw.Draw(image).text(xy, text, fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        return
    small = Image.new("L", (6 * len(text) + 2, 12))
    ImageDraw.Draw(small).text((1, 0), text, fill=255)
    scale = max(1, round(size / 9))
    mask = small.resize((small.width * scale, small.height * scale), Image.Resampling.NEAREST)
    image.paste(colour, (*xy, xy[0] + mask.width, xy[1] + mask.height), mask)


def annotated_jpeg(result: FrameResult, quality: int) -> bytes:
    """``annotate(result)`` as JPEG bytes: what a snapshot file holds and what the live view sends."""
    buffer = io.BytesIO()
    annotate(result).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class SnapshotWriter:
    def __init__(
        self,
        folder: str | os.PathLike[str],
        config: SnapshotConfig,
        free_space: Callable[[Path], int] = free_bytes,
    ):
        self.config = config
        self.files = CappedFolder(folder, ".jpg", config.max_mb, config.min_free_mb, free_space)

    @property
    def written(self) -> int:
        return self.files.written

    @property
    def skipped_low_disk(self) -> int:
        return self.files.skipped_low_disk

    @property
    def failed(self) -> int:
        return self.files.failed

    @property
    def last_error(self) -> str:
        return self.files.last_error

    @property
    def enabled(self) -> bool:
        config = self.config
        return config.max_mb > 0 and (config.every_n_frames > 0 or config.on_positive or config.on_cluster)

    def wanted(self, result: FrameResult, frame_number: int) -> bool:
        config = self.config
        if not self.enabled:
            return False
        return (
            (config.every_n_frames > 0 and frame_number % config.every_n_frames == 0)
            or (config.on_positive and result.positives > 0)
            or (config.on_cluster and result.clusters > 0)
        )

    def write(self, result: FrameResult, run_id: int | None) -> str | None:
        """Save one annotated frame; None (and counted) when the disk is too full for snapshots
        or refuses the write (``failed``, ``last_error``)."""
        if not self.files.disk_ok():
            self.files.skipped_low_disk += 1
            return None
        name = f"{time_stamp_name(result.frame.captured_at)}_run{run_id}_frame{result.frame.index}.jpg"
        return self.files.write(name, annotated_jpeg(result, self.config.quality))
