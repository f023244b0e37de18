"""Crops as the report's page embeds them: only real PNGs (a file under a crop's name may be
anything someone put in the pulled folder)."""

from __future__ import annotations

import io

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
