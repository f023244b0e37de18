"""Frames composed from real masked single-cell crops, with exact truth for every object.

A folder of crops like the training data (each cell on a black, masked background) becomes
microscope-like frames: every crop is placed once, alone (a single cell) or touching one or
two others (a pair or a triple: a cluster, as cells that grew or settled together look), on a
plain phase-contrast background whose grey level and sensor noise are estimated from the
crops themselves, with a gentle illumination gradient. Each field is then shown ``repeats``
times, each time shifted by a sub-pixel jitter and with fresh sensor noise, as a still stage
shows it frame after frame; then the stage "moves" to the next field. Every frame carries
the truth of its field: each object's box, mask, kind, and the label and file of each crop in it.

It is the test bed for what happens between a crop and a tracked cell: the Pi's detector,
mask, tracking and views (`metascope run --source composed:DIR`, `metascope bench pipeline
--field composed`, and train/'s end-to-end evaluation), and for the cluster rule (pairs and
triples of real cells). No pixel of a crop is changed: only the background around it is made.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from edge.capture.base import EndOfSource, Frame, Pacer

KINDS = ("single", "pair", "triple")
MEMBERS = {"single": 1, "pair": 2, "triple": 3}
EDGE_MARGIN_PX = 12  # from the frame edge: detection leaves out objects that touch it
PLACE_ATTEMPTS = 60  # random spots tried for an object before the frame counts as full
# A crop's own background estimate: its flattest quarter of pixels, away from the mask's rim
# (where the segmentation drew a dark outline). The 3x3 standard deviation of pure noise of
# sigma s has a median of about 0.92 s.
RIM_PX = 2
FLAT_QUANTILE = 25.0
LOCAL_SD_PER_SIGMA = 0.92
MIN_FLAT_PIXELS = 30
FALLBACK_NOISE = 2.0
NOISE_RANGE = (1.0, 4.0)  # a camera's sensor noise in grey levels, where an estimate must stay


@dataclass(frozen=True)
class Crop:
    """One masked single-cell crop, cut to its cell's bounding box."""

    pixels: np.ndarray = field(repr=False)  # uint8, the box around the cell
    mask: np.ndarray = field(repr=False)  # bool, same shape: the cell's pixels
    label: str
    source: str  # where it came from (a path relative to the crops folder)
    level: float  # the background grey level its flattest pixels suggest
    noise: float  # the sensor noise (sigma, grey levels) they suggest

    @classmethod
    def from_image(cls, gray: np.ndarray, label: str, source: str) -> Crop | None:
        """The cell of a masked crop (non-zero pixels), or None for an empty image."""
        mask = gray > 0
        if not mask.any():
            return None
        ys, xs = np.nonzero(mask)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        pixels, mask = gray[box].copy(), mask[box].copy()
        level, noise = background_estimate(pixels, mask)
        return cls(pixels, mask, label, source, level, noise)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def background_estimate(pixels: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(grey level, noise sigma) of the background a crop was cut from, read from its flattest
    interior pixels: in phase contrast the thin, untextured parts of a cell (and any background
    the segmentation kept) sit at the background's level with only the camera's noise on them."""
    values = pixels.astype(np.float32)
    mean = ndimage.uniform_filter(values, 3)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(values * values, 3) - mean * mean, 0.0))
    interior = ndimage.binary_erosion(mask, iterations=RIM_PX + 1)
    if interior.sum() < MIN_FLAT_PIXELS:
        return float(np.median(pixels[mask])), FALLBACK_NOISE
    flat = interior & (spread <= np.percentile(spread[interior], FLAT_QUANTILE))
    noise = float(np.median(spread[flat])) / LOCAL_SD_PER_SIGMA
    return float(np.median(pixels[flat])), float(np.clip(noise, *NOISE_RANGE))


@dataclass(frozen=True)
class Member:
    """One crop inside an object: its label, file and the part of it that shows."""

    label: str
    source: str
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 in field pixels (end exclusive)
    mask: np.ndarray = field(repr=False, compare=False)  # bool, bbox-local; under a later crop it is hidden


@dataclass(frozen=True)
class TruthObject:
    """One object as composed: a single cell, or two or three touching cells (a cluster)."""

    kind: str  # "single", "pair" or "triple"
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 in field pixels (end exclusive)
    centroid_yx: tuple[float, float]
    mask: np.ndarray = field(repr=False, compare=False)  # bool, bbox-local: every member's pixels
    members: tuple[Member, ...] = ()

    @property
    def cluster(self) -> bool:
        return self.kind != "single"

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(member.label for member in self.members)

    @property
    def label(self) -> str:
        """The label of its cells when they share one, else "mixed"."""
        return self.members[0].label if len(set(self.labels)) == 1 else "mixed"

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def to_dict(self) -> dict:
        """As truth.json holds it (masks as run-length encodings: see ``encode_mask``)."""
        return {
            "kind": self.kind,
            "bbox": list(self.bbox),
            "centroid_yx": [round(v, 2) for v in self.centroid_yx],
            "area": self.area,
            "mask_rle": encode_mask(self.mask),
            "label": self.label,
            "members": [
                {"label": m.label, "source": m.source, "bbox": list(m.bbox), "mask_rle": encode_mask(m.mask)}
                for m in self.members
            ],
        }


def encode_mask(mask: np.ndarray) -> list[int]:
    """Lengths of alternating runs, starting with a run of False, over the mask in row order."""
    flat = np.concatenate([[False], mask.ravel(), [not mask.ravel()[-1]] if mask.size else [True]])
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    return np.diff(np.concatenate([[0], changes])).tolist()


def decode_mask(runs: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    values = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return values[: shape[0] * shape[1]].reshape(shape)


@dataclass(frozen=True)
class ComposeSettings:
    """How frames are composed. Fractions are of objects; the rest are single cells."""

    width: int = 1024
    height: int = 768
    per_frame: int = 8  # objects per field at most (fewer when they do not fit)
    repeats: int = 24  # frames per field: 8 views 3 frames apart need 22
    pair_fraction: float = 0.0
    triple_fraction: float = 0.0
    gap_px: int = 25  # between separate objects
    max_overlap_px: int = 4  # touching cells overlap by 0 to this many pixels
    jitter_px: float = 0.3  # standard deviation of the field's shift each frame
    gradient: float = 6.0  # grey levels of illumination tilt across the frame, at most
    background_level: float = 0.0  # 0: the median of the field's crops' estimates
    noise_sigma: float = 0.0  # 0: the median of the field's crops' estimates
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pair_fraction < 0 or self.triple_fraction < 0 or self.pair_fraction + self.triple_fraction > 1:
            raise ValueError("pair_fraction and triple_fraction must be 0 or more, together at most 1")
        if self.width < 64 or self.height < 64 or self.per_frame < 1 or self.repeats < 1:
            raise ValueError("frames must be at least 64x64, with at least one object and one repeat")


@dataclass
class ComposedField:
    """One field before sensor noise: its float grey levels and what was placed where."""

    number: int
    canvas: np.ndarray = field(repr=False)  # float32, height x width
    objects: list[TruthObject]
    noise_sigma: float


@dataclass
class _Placed:
    crop: Crop
    top: int  # group-local, then field
    left: int


def load_crops(folder: str | os.PathLike[str]) -> list[Crop]:
    """Every masked crop below ``folder`` (png/jpg/tif, sorted; hidden files left out). Its label
    is the first folder below ``folder`` (the training layout DATA/<label>/...), or the folder's
    own name for crops directly in it."""
    from edge.capture.images import read_grayscale

    root = Path(folder)
    suffixes = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
    crops = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.suffix.lower() not in suffixes or any(p.startswith(".") for p in relative.parts):
            continue
        label = relative.parts[0] if len(relative.parts) > 1 else root.name
        crop = Crop.from_image(read_grayscale(path), label, relative.as_posix())
        if crop is not None:
            crops.append(crop)
    return crops


def _shifted_overlap(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> int:
    """Pixels where ``a`` and ``b`` placed ``dy, dx`` further down and right are both set."""
    y0, y1 = max(0, dy), min(a.shape[0], dy + b.shape[0])
    x0, x1 = max(0, dx), min(a.shape[1], dx + b.shape[1])
    if y0 >= y1 or x0 >= x1:
        return 0
    return int(np.count_nonzero(a[y0:y1, x0:x1] & b[y0 - dy : y1 - dy, x0 - dx : x1 - dx]))


def _touching_group(crops: Sequence[Crop], rng: np.random.Generator, max_overlap_px: int) -> list[_Placed]:
    """The crops placed (group-local corners) so that each touches one placed before it: moved in
    from a random direction until its mask meets theirs, then 0..max_overlap_px further."""
    placed = [_Placed(crops[0], 0, 0)]
    for crop in crops[1:]:
        anchor = placed[int(rng.integers(len(placed)))]
        angle = rng.uniform(0.0, 2.0 * math.pi)
        direction = np.array([math.sin(angle), math.cos(angle)])
        anchor_centre = np.array([anchor.top, anchor.left]) + np.array(anchor.crop.mask.shape) / 2.0
        reach = (math.hypot(*anchor.crop.mask.shape) + math.hypot(*crop.mask.shape)) / 2.0 + 2.0
        extra = int(rng.integers(0, max_overlap_px + 1))
        for distance in np.arange(reach, -1.0, -1.0):
            centre = anchor_centre + direction * distance
            top = round(centre[0] - crop.mask.shape[0] / 2.0)
            left = round(centre[1] - crop.mask.shape[1] / 2.0)
            if any(_touches(other, crop, top, left) for other in placed):
                centre = anchor_centre + direction * max(distance - extra, 0.0)
                top = round(centre[0] - crop.mask.shape[0] / 2.0)
                left = round(centre[1] - crop.mask.shape[1] / 2.0)
                break
        placed.append(_Placed(crop, top, left))
    return placed


def _touches(other: _Placed, crop: Crop, top: int, left: int) -> bool:
    """Whether ``crop`` at (top, left) meets ``other``'s mask or a pixel next to it."""
    grown = ndimage.binary_dilation(np.pad(other.crop.mask, 1))
    return _shifted_overlap(grown, crop.mask, top - other.top + 1, left - other.left + 1) > 0


def _union(placed: Sequence[_Placed]) -> tuple[int, int, np.ndarray]:
    """(top, left, mask) of every member together, in the members' coordinates."""
    top = min(p.top for p in placed)
    left = min(p.left for p in placed)
    bottom = max(p.top + p.crop.mask.shape[0] for p in placed)
    right = max(p.left + p.crop.mask.shape[1] for p in placed)
    union = np.zeros((bottom - top, right - left), dtype=bool)
    for p in placed:
        union[
            p.top - top : p.top - top + p.crop.mask.shape[0], p.left - left : p.left - left + p.crop.mask.shape[1]
        ] |= p.crop.mask
    return top, left, union


def _group_kinds(count: int, settings: ComposeSettings, rng: np.random.Generator) -> list[int]:
    """How many crops each object takes, until ``count`` crops are used up."""
    sizes = []
    used = 0
    weights = np.array([1.0 - settings.pair_fraction - settings.triple_fraction, settings.pair_fraction,
                        settings.triple_fraction])  # fmt: skip
    while used < count:
        size = int(rng.choice(3, p=weights)) + 1
        size = min(size, count - used)
        sizes.append(size)
        used += size
    return sizes


def compose_fields(crops: Sequence[Crop], settings: ComposeSettings) -> Iterator[ComposedField]:
    """Fields holding every crop exactly once (in a random order fixed by the seed); an object
    too large for an empty frame is left out (``skipped_crops`` counts those)."""
    rng = np.random.default_rng(settings.seed)
    order = [crops[i] for i in rng.permutation(len(crops))]
    groups, start = [], 0
    for size in _group_kinds(len(order), settings, rng):
        groups.append(order[start : start + size])
        start += size
    number = 0
    pending: list[tuple[int, int, np.ndarray, list[_Placed]]] = []
    occupied = np.zeros((settings.height, settings.width), dtype=bool)
    for group in groups:
        placed = _touching_group(group, rng, settings.max_overlap_px)
        top, left, union = _union(placed)
        spot = _free_spot(union, occupied, settings, rng)
        if spot is None and pending:
            yield _render_field(number, pending, settings, rng)
            number += 1
            pending, occupied = [], np.zeros_like(occupied)
            spot = _free_spot(union, occupied, settings, rng)
        if spot is None:
            continue  # larger than an empty frame
        y, x = spot
        for p in placed:
            p.top, p.left = p.top - top + y, p.left - left + x
        occupied[y : y + union.shape[0], x : x + union.shape[1]] |= union
        pending.append((y, x, union, placed))
        if len(pending) == settings.per_frame:
            yield _render_field(number, pending, settings, rng)
            number += 1
            pending, occupied = [], np.zeros_like(occupied)
    if pending:
        yield _render_field(number, pending, settings, rng)


def skipped_crops(crops: Sequence[Crop], settings: ComposeSettings) -> list[Crop]:
    """Crops too large for an empty frame with its edge margin: composing leaves them out."""
    room = (settings.height - 2 * EDGE_MARGIN_PX, settings.width - 2 * EDGE_MARGIN_PX)
    return [c for c in crops if c.mask.shape[0] > room[0] or c.mask.shape[1] > room[1]]


def _free_spot(
    union: np.ndarray, occupied: np.ndarray, settings: ComposeSettings, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A top-left corner where ``union`` keeps ``gap_px`` from every object and the edge margin."""
    height, width = union.shape
    max_y = settings.height - EDGE_MARGIN_PX - height
    max_x = settings.width - EDGE_MARGIN_PX - width
    if max_y < EDGE_MARGIN_PX or max_x < EDGE_MARGIN_PX:
        return None
    gap = settings.gap_px
    for _ in range(PLACE_ATTEMPTS):
        y = int(rng.integers(EDGE_MARGIN_PX, max_y + 1))
        x = int(rng.integers(EDGE_MARGIN_PX, max_x + 1))
        if not occupied[max(y - gap, 0) : y + height + gap, max(x - gap, 0) : x + width + gap].any():
            return y, x
    return None


def _render_field(
    number: int,
    objects: list[tuple[int, int, np.ndarray, list[_Placed]]],
    settings: ComposeSettings,
    rng: np.random.Generator,
) -> ComposedField:
    crops = [p.crop for *_, placed in objects for p in placed]
    level = settings.background_level or float(np.median([c.level for c in crops]))
    noise = settings.noise_sigma or float(np.median([c.noise for c in crops]))
    canvas = background(settings.height, settings.width, level, settings.gradient, rng)
    truth = []
    for y, x, union, placed in objects:
        shown = np.zeros(canvas.shape, dtype=np.int16) - 1  # which member shows at each pixel
        for index, p in enumerate(placed):
            height, width = p.crop.mask.shape
            region = canvas[p.top : p.top + height, p.left : p.left + width]
            region[p.crop.mask] = p.crop.pixels[p.crop.mask]  # a later crop lies over an earlier one
            shown[p.top : p.top + height, p.left : p.left + width][p.crop.mask] = index
        members = []
        for index, p in enumerate(placed):
            height, width = p.crop.mask.shape
            visible = shown[p.top : p.top + height, p.left : p.left + width] == index
            members.append(
                Member(p.crop.label, p.crop.source, (p.top, p.left, p.top + height, p.left + width), visible)
            )
        ys, xs = np.nonzero(union)
        kind = KINDS[len(placed) - 1]
        truth.append(TruthObject(kind, (y, x, y + union.shape[0], x + union.shape[1]),
                                 (float(ys.mean() + y), float(xs.mean() + x)), union, tuple(members)))  # fmt: skip
    return ComposedField(number, canvas, truth, noise)


def background(height: int, width: int, level: float, gradient: float, rng: np.random.Generator) -> np.ndarray:
    """A plain field at ``level`` with a random illumination tilt of up to ``gradient`` grey levels."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tilt = rng.uniform(-gradient, gradient, 2) if gradient > 0 else np.zeros(2)
    return (level + tilt[0] * (yy / height - 0.5) + tilt[1] * (xx / width - 0.5)).astype(np.float32)


def render(canvas: np.ndarray, noise_sigma: float, rng: np.random.Generator, jitter_px: float) -> np.ndarray:
    """One camera frame of a field: shifted by a sub-pixel jitter, sensor noise added, uint8."""
    if jitter_px > 0:
        canvas = ndimage.shift(canvas, rng.normal(0.0, jitter_px, 2), order=1, mode="nearest")
    noisy = canvas + rng.normal(0.0, noise_sigma, canvas.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def on_background(crop: Crop, rng: np.random.Generator, margin_px: int = 48, jitter_px: float = 0.5) -> np.ndarray:
    """One crop alone on its own estimated background, as a camera would show it (uint8): the
    unmasked form of a training cell, for the Pi's detector to segment."""
    height, width = crop.mask.shape
    canvas = np.full((height + 2 * margin_px, width + 2 * margin_px), crop.level, dtype=np.float32)
    canvas[margin_px : margin_px + height, margin_px : margin_px + width][crop.mask] = crop.pixels[crop.mask]
    return render(canvas, crop.noise, rng, jitter_px)


class ComposedSource:
    """Frames of composed fields, each shown ``settings.repeats`` times (jitter and fresh noise
    each frame), then the next field; ends after the last field (or ``max_frames``), or starts
    again with ``loop``. Paced like a camera when ``fps`` > 0. A frame's ``truth`` is its field's
    objects (in field pixels: the jitter moves them by a fraction of a pixel)."""

    def __init__(
        self,
        crops: Sequence[Crop],
        settings: ComposeSettings | None = None,
        fps: float = 0.0,
        max_frames: int | None = None,
        loop: bool = False,
        description: str = "",
    ):
        if not crops:
            raise ValueError("no crops to compose frames from")
        self.crops, self.settings = list(crops), settings or ComposeSettings()
        self.fps, self.max_frames, self.loop = fps, max_frames, loop
        s = self.settings
        self.description = description or (
            f"composed {s.width}x{s.height} from {len(self.crops)} crops, {s.repeats} frames a field, seed {s.seed}"
        )
        self._pacer = Pacer(fps)
        self._fields: Iterator[ComposedField] = iter(())
        self._field: ComposedField | None = None
        self._current = -1  # the field shown now, counted on through loops
        self._loops = 0
        self._rng = np.random.default_rng(s.seed)

    def open(self) -> None:
        self._pacer.start()
        self._fields = compose_fields(self.crops, self.settings)
        self._field, self._current, self._loops = None, -1, 0
        self._rng = np.random.default_rng([self.settings.seed, 1])

    def field_of(self, index: int) -> int:
        """Which field (0, 1, ...) frame ``index`` shows, counting on through loops."""
        return index // self.settings.repeats

    def next_frame(self, timeout_s: float, should_stop=None) -> Frame:
        if self.max_frames is not None and self._pacer.next_index >= self.max_frames:
            raise EndOfSource(f"{self.max_frames} composed frames done")
        index, dropped = self._pacer.take(should_stop)
        while self._current < self.field_of(index):  # fields skipped by dropped frames are passed over
            self._advance()
        pixels = render(self._field.canvas, self._field.noise_sigma, self._rng, self.settings.jitter_px)
        return Frame(pixels=pixels, captured_at=time.time(), index=index, dropped_before=dropped,
                     truth=self._field.objects)  # fmt: skip

    def _advance(self) -> None:
        try:
            self._field = next(self._fields)
        except StopIteration:
            if not self.loop or self._current < 0:
                raise EndOfSource("every composed field shown") from None
            self._loops += 1  # a new arrangement of the same crops
            self._fields = compose_fields(self.crops, replace(self.settings, seed=self.settings.seed + self._loops))
            self._field = next(self._fields)
        self._current += 1

    def close(self) -> None:
        self._fields = iter(())
        self._field = None


def every_frame(source: ComposedSource) -> Iterator[Frame]:
    """Each frame of a source that ends (``loop`` off), in order; the source is opened here and
    closed when the frames end or the caller stops early."""
    source.open()
    try:
        while True:
            try:
                yield source.next_frame(timeout_s=1.0)
            except EndOfSource:
                return
    finally:
        source.close()


def write_frames(dest: str | os.PathLike[str], source: ComposedSource) -> Path:
    """Every frame of ``source`` as DEST/frame_NNNNNN.png, and DEST/truth.json: one entry per
    field with its frames and objects (masks run-length encoded, see ``encode_mask``). The
    folder replays with `metascope run --source replay:DEST`."""
    from PIL import Image

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fields: list[dict] = []
    for frame in every_frame(source):
        name = f"frame_{frame.index:06d}.png"
        Image.fromarray(frame.pixels).save(dest / name)
        number = source.field_of(frame.index)
        if not fields or fields[-1]["field"] != number:
            fields.append({"field": number, "frames": [], "objects": [obj.to_dict() for obj in frame.truth]})
        fields[-1]["frames"].append(name)
    (dest / "truth.json").write_text(json.dumps({"format": "metascope-composed/1", "fields": fields}))
    return dest
