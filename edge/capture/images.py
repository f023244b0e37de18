"""Image files as grey frames: the one reader that replay, `classify`, `detect` and training use.

Anything that is not a complete, sensibly sized image is an ImageError naming the file, never a
crash or a hang (a FIFO, a decompression bomb, a truncated file).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# Larger than any microscope camera frame (HQ camera: 12.3 MP) with room to spare, far below
# what would exhaust a Pi's memory. Pillow's own guard is only a warning below 2x its limit.
MAX_IMAGE_PIXELS = 64_000_000
# What a folder walk takes for an image (a README, LICENSE or notes.txt beside the crops is not one).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and the problem."""


def read_grayscale(path: str | os.PathLike[str], min_side: int = 1) -> np.ndarray:
    """Read any Pillow-readable image as a uint8 HxW grayscale array.

    Raises ImageError with the file name and the reason for anything that is not a complete,
    sensibly sized image: empty, not an image, truncated, too large, fewer than ``min_side``
    pixels wide or high (what the caller can look at: ``edge.cells.detect.min_frame_side``), unreadable.
    """
    path = Path(path)
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):  # a FIFO would block the open; a folder is no image
            raise ImageError(f"{path}: not a regular file")
        if status.st_size == 0:
            raise ImageError(f"{path}: empty file")
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit; make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{path}: {width}x{height} pixels is over the {MAX_IMAGE_PIXELS:,} pixel "
                        "limit (decompression bomb guard)"
                    )
                if min(width, height) < min_side:
                    raise ImageError(f"{path}: {width}x{height} pixels is too small (at least {min_side} each way)")
                image.load()  # decodes now, so truncation is reported here
                return to_grayscale(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: too many pixels (decompression bomb guard): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # OSError covers truncated data, permissions and directories; SyntaxError and
        # ValueError are what some Pillow decoders raise on corrupt headers.
        raise ImageError(f"{path}: cannot read image: {exc}") from exc


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to uint8 grayscale.

    8-bit modes use Pillow's ITU-R 601 luma, full range (0..255). The camera's Y plane has the
    same grey levels only because edge/capture/picamera.py asks libcamera for sYCC (full-range
    BT.601); picamera2's video default (Rec709 or Smpte170m, limited range 16..235) would not.
    16/32-bit integer images are mapped from 0..65535 to 0..255; float images from 0..1 when
    their maximum is at most 1, else clipped to 0..255. Transparent pixels become 0, the value
    of a masked background.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if mode == "L":
        return np.array(image, dtype=np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        luma = np.asarray(rgba.convert("L"), dtype=np.uint16)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint16)
        return ((luma * alpha + 127) // 255).astype(np.uint8)
    try:
        return np.array(image.convert("L"), dtype=np.uint8)
    except ValueError:
        return np.array(image.convert("RGB").convert("L"), dtype=np.uint8)
