"""Frames from image files: a folder (sorted) or a glob, optionally paced and looped.

For desktops, demos and re-analysis of stored images, or a folder another program fills
(``follow``). An unreadable or too small file is skipped, counted and named in a warning, never
counted as a camera failure.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path

from edge.capture.base import MIN_FRAME_SIDE, CaptureTimeout, EndOfSource, Frame, NothingNew, Pacer, SourceError
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
FOLLOW_RETRIES = 3  # a followed file that failed to read is read again when it changes, at most this often

Signature = tuple[int, int]  # (size, mtime_ns): a file another program is still writing changes it


def file_signatures(pattern: str) -> dict[Path, Signature]:
    """The files ``list_images`` finds, each with its size and modification time (vanished ones left out)."""
    found = {}
    for path in list_images(pattern):
        try:
            status = path.stat()
        except OSError:
            continue
        found[path] = (status.st_size, status.st_mtime_ns)
    return found


class ReplaySource:
    """Files in name order. An unreadable, vanished or too small file is skipped, counted
    (``skipped``) and named in a rate-limited warning: a bad file is not a dead camera.
    ``follow``: at the end, wait for files added since (a folder another program fills) instead
    of ending; a new file is taken once it has stopped changing between two listings (it may
    still be being written), and one that fails to read is tried again if it changes later."""

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
        self._position = 0  # the next file to read
        self._follow = _FollowedFolder(pattern)
        self._pacer = Pacer(fps)
        self.skipped = 0
        self._skip_warning = RateLimitedWarning(10.0)

    def open(self) -> None:
        self._follow = _FollowedFolder(self.pattern)
        self._files = [] if self.follow else list_images(self.pattern)
        if not self._files and not self.follow:
            raise SourceError(f"replay: no image files found at {self.pattern!r}")
        self._position = 0
        self._pacer.start()

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        while True:
            if self.max_frames is not None and self._pacer.next_index >= self.max_frames:
                raise EndOfSource(f"{self.max_frames} frames done")
            path = self._next_path(timeout_s, should_stop)
            index, dropped = self._pacer.take(should_stop)
            try:
                # A frame too small to hold a cell is a bad file, like an undecodable one.
                pixels = read_grayscale(path, min_side=MIN_FRAME_SIDE)
            except ImageError as exc:
                self.skipped += 1
                retry = self.follow and self._follow.failed(path)
                self._skip_warning("replay: skipped %s%s", exc, " (read again if it changes)" if retry else "")
                continue
            if self.follow:
                self._follow.read(path)
            return Frame(pixels=pixels, captured_at=time.time(), index=index, dropped_before=dropped)

    def _next_path(self, timeout_s: float, should_stop) -> Path:
        if self._position >= len(self._files):
            if self.loop and self._files:
                self._position = 0
            elif self.follow:
                self._files, self._position = self._wait_for_new_files(timeout_s, should_stop), 0
            else:
                raise EndOfSource(f"replay: all {len(self._files)} files done")
        path = self._files[self._position]
        self._position += 1
        return path

    def _wait_for_new_files(self, timeout_s: float, should_stop) -> list[Path]:
        deadline = time.monotonic() + timeout_s
        while True:
            if new := self._follow.settled_new_files():
                return new
            if should_stop is not None and should_stop():
                raise CaptureTimeout("stopping while waiting for new files")
            if time.monotonic() >= deadline:
                raise NothingNew(f"replay: no new file in {self.pattern!r} for {timeout_s:g} s")
            time.sleep(FOLLOW_POLL_S)

    def close(self) -> None:
        self._files = []


class _FollowedFolder:
    """Which files of a followed folder are new and finished. Everything it holds is bounded
    by the files in the folder now: a file that leaves the folder is forgotten."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self._taken: dict[Path, Signature] = {}  # handed out, with the signature they had then
        self._settling: dict[Path, Signature] = {}  # new at the last listing: taken if unchanged at the next
        self._failures: dict[Path, int] = {}  # taken files whose read failed: tried again if they change

    def settled_new_files(self) -> list[Path]:
        """New files (in name order) that did not change since the previous listing."""
        listing = file_signatures(self.pattern)
        self._taken = {path: signature for path, signature in self._taken.items() if path in listing}
        self._failures = {path: count for path, count in self._failures.items() if path in listing}
        new = {path: signature for path, signature in listing.items() if self._is_new(path, signature)}
        ready = [path for path, signature in new.items() if self._settling.get(path) == signature]
        self._settling = {path: signature for path, signature in new.items() if path not in ready}
        self._taken.update((path, new[path]) for path in ready)
        return ready

    def _is_new(self, path: Path, signature: Signature) -> bool:
        if path not in self._taken:
            return True
        return path in self._failures and self._taken[path] != signature  # it changed since its read failed

    def failed(self, path: Path) -> bool:
        """Count a failed read; whether the file will be read again if it changes."""
        self._failures[path] = self._failures.get(path, 0) + 1
        if self._failures[path] < FOLLOW_RETRIES:
            return True
        del self._failures[path]  # given up: it stays taken
        return False

    def read(self, path: Path) -> None:
        self._failures.pop(path, None)
