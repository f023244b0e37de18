"""Crops as the report's page embeds them: only real PNGs (a file under a crop's name may be
anything someone put in the pulled folder)."""

from __future__ import annotations

import io

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THUMBNAIL_PX = 208  # twice the 104 px a tile is drawn at, for a high-density screen; a rig's crop is smaller
MAX_PIXELS = 4096 * 4096  # decoded at most: a small file may declare a huge image


class NotACrop(ValueError):
    """The bytes are not a PNG a rig could have written; the message says why."""


def verified_png(data: bytes) -> bytes:
    """``data`` when it is a whole, valid PNG: the signature, then Pillow's check of every chunk."""
    if not data.startswith(PNG_SIGNATURE):
        raise NotACrop("not a PNG (no PNG signature): not shown")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many kinds on hostile bytes (SyntaxError, struct.error...)
        raise NotACrop(f"not a valid PNG ({exc}): not shown") from None
    return data


def thumbnail_png(data: bytes) -> bytes:
    """A verified PNG as the page embeds it: at most THUMBNAIL_PX a side (a rig's crop as it
    is), re-encoded, so nothing of the file but its pixels reaches the page."""
    verified_png(data)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if image.width * image.height > MAX_PIXELS:
                raise NotACrop(f"{image.width}x{image.height} pixels, larger than any crop: not shown")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            shown = image if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA") else image.convert("RGB")
            buffer = io.BytesIO()
            shown.save(buffer, format="PNG")
    except NotACrop:
        raise
    except Exception as exc:  # as in verified_png: decoding hostile bytes fails in many ways
        raise NotACrop(f"not a valid PNG ({exc}): not shown") from None
    return buffer.getvalue()
