"""Frames from image files: a folder (sorted) or a glob, optionally paced and looped.

For desktops, demos and re-analysis of stored images. An unreadable file is one bad frame
(counted, skipped), not the end of the run.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path

from edge.preprocess import ImageError, read_grayscale
from edge.sources.base import BadFrame, EndOfSource, Frame, Pacer, SourceError


def list_images(pattern: str) -> list[Path]:
    """A folder's files (recursively, sorted, hidden ones skipped) or the files a glob matches."""
    path = Path(pattern)
    if path.is_dir():
        return [
            found
            for found in sorted(path.rglob("*"))
            if found.is_file() and not any(part.startswith(".") for part in found.relative_to(path).parts)
        ]
    if any(char in pattern for char in "*?["):
        return [Path(found) for found in sorted(glob.glob(pattern, recursive=True)) if Path(found).is_file()]
    if path.is_file():
        return [path]
    return []


class ReplaySource:
    def __init__(self, pattern: str, fps: float = 0.0, loop: bool = False, max_frames: int | None = None):
        self.pattern, self.fps, self.loop, self.max_frames = pattern, fps, loop, max_frames
        self.description = f"replay {pattern}" + (f" at {fps:g} fps" if fps else "") + (", looping" if loop else "")
        self._files: list[Path] = []
        self._pacer = Pacer(fps)

    def open(self) -> None:
        self._files = list_images(self.pattern)
        if not self._files:
            raise SourceError(f"replay: no image files found at {self.pattern!r}")
        self._pacer.start()

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        if self.max_frames is not None and self._pacer.next_index >= self.max_frames:
            raise EndOfSource(f"{self.max_frames} frames done")
        if not self.loop and self._pacer.next_index >= len(self._files):
            raise EndOfSource(f"replay: all {len(self._files)} files done")
        index, dropped = self._pacer.take(should_stop)
        if not self.loop and index >= len(self._files):
            raise EndOfSource(f"replay: all {len(self._files)} files done")
        path = self._files[index % len(self._files)]
        try:
            pixels = read_grayscale(path)
        except ImageError as exc:
            raise BadFrame(str(exc)) from exc
        return Frame(pixels=pixels, captured_at=time.time(), index=index, dropped_before=dropped)

    def close(self) -> None:
        self._files = []
