"""`metascope detect`'s output: every object of a frame drawn on it and listed as a CSV row
(area, solidity, cluster or not and why, kept or why rejected), to tune [detect] on a few frames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from edge.cells.detect import Inspected

CELL_COLOUR = (60, 220, 90)
CLUSTER_COLOUR = (255, 170, 0)
REJECTED_COLOUR = (255, 60, 60)
COLUMNS = ("frame", "object", "kept", "rejected", "cluster", "cluster_reasons", "area_px", "solidity", "cores",
           "cluster_score", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")  # fmt: skip


def colour_of(item: Inspected) -> tuple[int, int, int]:
    if item.rejected:
        return REJECTED_COLOUR
    return CLUSTER_COLOUR if item.detection.cluster else CELL_COLOUR


def annotate(gray: np.ndarray, objects: list[Inspected]) -> Image.Image:
    """The frame in colour: green cells, orange clusters (thick), red rejected objects; each box
    numbered as its CSV row, with the mask's outline tinted so the segmentation shows."""
    image = Image.fromarray(gray).convert("RGB")
    pixels = np.asarray(image).copy()
    for item in objects:
        found = item.detection
        y0, x0 = found.origin_yx
        mask = found.mask[: pixels.shape[0] - y0, : pixels.shape[1] - x0]
        inner = np.zeros_like(mask)
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        edge = mask & ~inner
        region = pixels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        region[edge] = colour_of(item)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for number, item in enumerate(objects, start=1):
        y0, x0, y1, x1 = item.detection.bbox
        colour = colour_of(item)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=3 if item.detection.cluster else 1)
        draw.text((x0 + 2, max(y0 - 11, 0)), str(number), fill=colour)
    return image


def rows(frame_name: str, objects: list[Inspected]) -> list[dict[str, Any]]:
    """One CSV row (COLUMNS) per object, numbered as in the annotated frame."""
    found = []
    for number, item in enumerate(objects, start=1):
        detection = item.detection
        y0, x0, y1, x1 = detection.bbox
        values = [frame_name, number, "no" if item.rejected else "yes", item.rejected]
        values += ["yes" if detection.cluster else "no", "; ".join(item.cluster_reasons), detection.area]
        values += ["" if math.isnan(item.solidity) else round(item.solidity, 3), detection.cores]
        values += ["" if math.isnan(item.cluster_score) else round(item.cluster_score, 3)]
        values += [round(detection.centroid_yx[1], 1), round(detection.centroid_yx[0], 1), x0, y0, x1, y1]
        found.append(dict(zip(COLUMNS, values, strict=True)))
    return found
