"""Annotated JPEG snapshots of frames: boxes coloured by label, probability printed.

They live in the state directory's snapshots/ folder under their own size cap (oldest deleted
first) and are the first thing to stop when the disk runs low.
"""

from __future__ import annotations

import io
import os
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from edge.config import SnapshotConfig
from edge.store import iso_utc

POSITIVE_COLOUR = (255, 60, 60)
NEGATIVE_COLOUR = (60, 220, 255)


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free space for unprivileged writers on the filesystem that holds (or will hold) ``path``:
    a folder not made yet is measured at its nearest existing parent."""
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    return shutil.disk_usage(target).free


def annotate(result: Any) -> Image.Image:
    """The frame in colour with each cell's box (red: positive, cyan: negative; clusters drawn
    with a double line) and its probability."""
    image = Image.fromarray(result.frame.pixels).convert("RGB")
    draw = ImageDraw.Draw(image)
    for cell in result.cells:
        y0, x0, y1, x1 = cell.bbox
        colour = POSITIVE_COLOUR if cell.positive else NEGATIVE_COLOUR
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=3 if cell.cluster else 1)
        text = f"{cell.probability:.2f}" + (" C" if cell.cluster else "")
        draw.text((x0 + 2, max(y0 - 11, 0)), text, fill=colour)
    return image


class SnapshotWriter:
    def __init__(
        self,
        folder: str | os.PathLike[str],
        config: SnapshotConfig,
        free_space: Callable[[Path], int] = free_bytes,
    ):
        self.folder = Path(folder)
        self.config = config
        self.free_space = free_space
        self.written = 0
        self.skipped_low_disk = 0
        self.failed = 0  # could not be written (the disk refused)
        self.last_error = ""
        # Names start with the capture time, so name order is age order. The folder is made at
        # the first snapshot: a full disk at start must not stop the run.
        existing = sorted(path for path in self.folder.glob("*.jpg") if path.is_file())
        self._files: deque[tuple[Path, int]] = deque((path, path.stat().st_size) for path in existing)
        self.total_bytes = sum(size for _, size in self._files)

    @property
    def enabled(self) -> bool:
        config = self.config
        return config.max_mb > 0 and (config.every_n_frames > 0 or config.on_positive or config.on_cluster)

    def wanted(self, result: Any, frame_number: int) -> bool:
        config = self.config
        if not self.enabled:
            return False
        return (
            (config.every_n_frames > 0 and frame_number % config.every_n_frames == 0)
            or (config.on_positive and result.positives > 0)
            or (config.on_cluster and result.clusters > 0)
        )

    def disk_ok(self) -> bool:
        return self.free_space(self.folder) >= self.config.min_free_mb * 1024 * 1024

    def write(self, result: Any, run_id: int | None) -> str | None:
        """Save one annotated frame; None (and counted) when the disk is too full for snapshots
        or refuses the write (``failed``, ``last_error``)."""
        if not self.disk_ok():
            self.skipped_low_disk += 1
            return None
        buffer = io.BytesIO()
        annotate(result).save(buffer, format="JPEG", quality=self.config.quality)
        data = buffer.getvalue()
        cap = self.config.max_mb * 1024 * 1024
        if len(data) > cap:
            return None
        while self._files and self.total_bytes + len(data) > cap:
            oldest, size = self._files.popleft()
            oldest.unlink(missing_ok=True)
            self.total_bytes -= size
        stamp = iso_utc(result.frame.captured_at).replace(":", "").replace("-", "").replace(".", "_")
        name = f"{stamp}_run{run_id}_frame{result.frame.index}.jpg"
        path = self.folder / name
        temporary = path.with_suffix(".jpg.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            os.replace(temporary, path)  # never a half-written JPEG under the real name
        except OSError as exc:  # disk full, read-only, EIO, no inodes: a lost snapshot, not a lost run
            temporary.unlink(missing_ok=True)
            self.failed += 1
            self.last_error = f"cannot write {path}: {exc}"
            return None
        self._files.append((path, len(data)))
        self.total_bytes += len(data)
        self.written += 1
        return name
