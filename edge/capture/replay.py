"""Frames from image files: a folder (sorted) or a glob, optionally paced and looped.

For desktops, demos and re-analysis of stored images, or a folder another program fills
(``follow``). An unreadable file is skipped with a warning, never counted as a camera failure.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path

from edge.capture.base import CaptureTimeout, EndOfSource, Frame, NothingNew, Pacer, SourceError
from edge.capture.images import ImageError, read_grayscale
from edge.logs import RateLimitedWarning


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


FOLLOW_POLL_S = 0.25  # how often a followed folder is listed again while waiting


class ReplaySource:
    """Files in name order. An unreadable or vanished file is skipped with a warning (a bad
    file is not a dead camera); ``follow``: at the end, wait for files added since (a folder
    another program fills) instead of ending."""

    def __init__(
        self, pattern: str, fps: float = 0.0, loop: bool = False, max_frames: int | None = None, follow: bool = False
    ):
        self.pattern, self.fps, self.loop, self.max_frames, self.follow = pattern, fps, loop, max_frames, follow
        self.description = (
            f"replay {pattern}"
            + (f" at {fps:g} fps" if fps else "")
            + (", looping" if loop else "")
            + (", following new files" if follow else "")
        )
        self._files: list[Path] = []
        self._seen: set[Path] = set()
        self._position = 0  # the next file to read
        self._pacer = Pacer(fps)
        self.skipped = 0
        self._skip_warning = RateLimitedWarning(10.0)

    def open(self) -> None:
        self._files = list_images(self.pattern)
        if not self._files and not self.follow:
            raise SourceError(f"replay: no image files found at {self.pattern!r}")
        self._seen = set(self._files)
        self._position = 0
        self._pacer.start()

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        while True:
            if self.max_frames is not None and self._pacer.next_index >= self.max_frames:
                raise EndOfSource(f"{self.max_frames} frames done")
            path = self._next_path(timeout_s, should_stop)
            index, dropped = self._pacer.take(should_stop)
            try:
                pixels = read_grayscale(path)
            except ImageError as exc:
                self.skipped += 1
                self._skip_warning("replay: skipped %s", exc)
                continue
            return Frame(pixels=pixels, captured_at=time.time(), index=index, dropped_before=dropped)

    def _next_path(self, timeout_s: float, should_stop) -> Path:
        if self._position >= len(self._files):
            if self.loop and self._files:
                self._position = 0
            elif self.follow:
                self._wait_for_new_files(timeout_s, should_stop)
            else:
                raise EndOfSource(f"replay: all {len(self._files)} files done")
        path = self._files[self._position]
        self._position += 1
        return path

    def _wait_for_new_files(self, timeout_s: float, should_stop) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            new = [path for path in list_images(self.pattern) if path not in self._seen]
            if new:
                self._files.extend(new)
                self._seen.update(new)
                return
            if should_stop is not None and should_stop():
                raise CaptureTimeout("stopping while waiting for new files")
            if time.monotonic() >= deadline:
                raise NothingNew(f"replay: no new file in {self.pattern!r} for {timeout_s:g} s")
            time.sleep(FOLLOW_POLL_S)

    def close(self) -> None:
        self._files = []
