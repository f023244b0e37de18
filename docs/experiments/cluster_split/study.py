"""Study: would splitting touching cells at their waist (a distance-transform marker watershed)
catch more touching pairs than the cluster flag alone, at no more cost to single cells?

Frames are composed exactly as `metascope bench clusters` composes them (same crops sampled per
condition, same seeds, same detector and settings), so the figures compare with
docs/bench/clusters.json. Every detection gets the cluster rule's five figures and, where its
distance transform holds two or more thick parts, a candidate split:

- markers: the parts left when a level is lowered through the distance transform to the
  deepest waist (edge.cells.cluster_features.waist_figures' search), each part kept whose own
  waist at that level is at least ``MARKER_WAIST``;
- scipy.ndimage.watershed_ift of the inverted distance transform from those markers, inside
  the mask; each part then is its own detection with its own cluster flag.

Everything learnt is learnt leave-one-condition-out (the fold's rule, its flag threshold, the
split decision and its threshold all from the other conditions' frames):

- ``flag``: the cluster flag alone (the learnt rule relearnt per fold, as the bench's
  ``learnt_loco``), at several flag rates: the trade-off curve.
- ``split``: the flag at 5 %, and an object the flag leaves alone is split when a logistic
  regression on its figures and its parts' figures (smallest and largest part against the
  typical cell, least solid part, deepest notch of a part, cut length over the smallest part's
  radius, part count) says so, at a share of training single cells it may split.
- ``oracle``: the flag, and a split exactly where the watershed cuts a pair or triple into its
  cells and never elsewhere: the ceiling of any decision over this watershed.
- ``--recurse 1``: each part is cut once more (a triple in a row shows one waist at a time).

Splits are only made of objects the flag leaves alone: cutting a flagged pair in the wrong place
loses a cluster that was caught (splitting flagged objects too was tried first and was worse).
Before this script a grid of 336 fixed gates (the waist, the smallest part's area, the object's
area, the markers' own waist) was tried in-sample on 30 crops a condition; none did better than
raising the flag rate either. results-recurse0.json and results-recurse1.json are its output.

    PYTHONPATH=$PWD python docs/experiments/cluster_split/study.py ../shared/data/fayyaz-mda231-pc3 \\
        --per-condition 60 --out docs/experiments/cluster_split/results.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from edge.capture.composed import ComposeSettings, compose_fields, load_crops, render
from edge.cells.cluster_features import CROSS, FEATURES, cluster_features, distance_inside
from edge.cells.cluster_rule import compact_pairs, learn
from edge.cells.cluster_truth import FLAGGED, LOST, SPLIT, judged, outcomes
from edge.cells.detect import Detection, DetectSettings, detect
from edge.commands.bench_clusters import JITTER_PX, PAIR_FRACTION, TRIPLE_FRACTION, conditions_of, detection_labels

FACTOR = DetectSettings.downscale
MARKER_WAIST = 0.2  # a marker's own neck below its radius at the chosen level (0.1 was no better)
FLAG_RATES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
SPLIT_RATES = (0.01, 0.02, 0.03, 0.05)
RECURSE = [0]  # --recurse: split each part this many times more
SPLIT_TIME = [0.0, 0]  # seconds spent finding candidate splits, detections looked at


@dataclass
class Part:
    detection: Detection
    figures: np.ndarray


@dataclass
class Frame:
    condition: str
    objects: list
    shape: tuple[int, int]
    detections: list[Detection]
    figures: list[np.ndarray]  # the cluster rule's, against the crops' median area
    labels: list[int]  # detection_labels: 1 several cells, 0 one, -1 unknown
    parts: list[list[Part] | None]  # the watershed's split, None where no two thick parts
    cut_px: list[int]
    role: list[str] = field(default_factory=list)  # single, split-right, split-wrong, no-parts, other
    kind: list[str] = field(default_factory=list)  # the truth object's kind each detection lies mostly on


def watershed_parts(mask: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(part number at each binned pixel, parts) of a binned mask, or None without two thick parts."""
    distance = distance_inside(mask)
    peak = float(distance.max())
    if peak < 2.0:
        return None
    tops = (distance == ndimage.maximum_filter(distance, footprint=CROSS)) & (distance >= 1.0)
    rows, columns = np.nonzero(tops)
    best = None
    for level in np.linspace(0.95 * peak, 1.0, 16):
        labels, count = ndimage.label(distance >= level, structure=CROSS)
        if count < 2:
            continue
        radii = np.zeros(count + 1)
        np.maximum.at(radii, labels[rows, columns], distance[tops])
        waist = 1.0 - level / float(np.sort(radii[1:])[-2])
        if best is None or waist > best[0]:
            best = (waist, level, labels, radii)
    if best is None:
        return None
    _, level, labels, radii = best
    keep = [i for i in range(1, len(radii)) if radii[i] > 0 and 1.0 - level / radii[i] >= MARKER_WAIST]
    if len(keep) < 2:
        return None
    markers = np.zeros(mask.shape, np.int16)
    for number, label in enumerate(keep, start=1):
        markers[labels == label] = number
    markers[~mask] = -1
    cost = np.where(mask, np.round((peak - distance) * 64), 65535).astype(np.uint16)
    parts = ndimage.watershed_ift(cost, markers)
    parts[~mask] = 0
    return parts, len(keep)


def part_detection(part: np.ndarray, origin: tuple[int, int], median: float) -> Part:
    """One watershed part (binned, bbox-local of its object) as a detection of its own."""
    piece, count = ndimage.label(part)
    if count > 1:  # keep its largest connected piece
        part = piece == 1 + int(np.bincount(piece.ravel())[1:].argmax())
    ys, xs = np.nonzero(part)
    box = part[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    y0, x0 = origin[0] + int(ys.min()), origin[1] + int(xs.min())
    area = int(box.sum()) * FACTOR * FACTOR
    bbox = (y0 * FACTOR, x0 * FACTOR, (y0 + box.shape[0]) * FACTOR, (x0 + box.shape[1]) * FACTOR)
    centroid = ((origin[0] + ys.mean()) * FACTOR + 0.5, (origin[1] + xs.mean()) * FACTOR + 0.5)
    full = box.repeat(FACTOR, axis=0).repeat(FACTOR, axis=1)
    return Part(Detection(bbox, centroid, area, full, False, 1), cluster_features(box, area, median))


def split_of(found: Detection, median: float, depth: int = 0) -> tuple[list[Part] | None, int]:
    """The watershed's parts of one detection (None: no two thick parts) and the cut's length; with
    ``--recurse`` each part is split once more (a triple in a row shows one waist at a time)."""
    binned = found.mask[::FACTOR, ::FACTOR]
    result = watershed_parts(binned)
    if result is None:
        return None, 0
    parts, count = result
    origin = (found.bbox[0] // FACTOR, found.bbox[1] // FACTOR)
    pieces = [part_detection(parts == k, origin, median) for k in range(1, count + 1) if (parts == k).any()]
    neighbours = ((parts[1:], parts[:-1]), (parts[:, 1:], parts[:, :-1]))
    cut = sum(int(((a != b) & (a > 0) & (b > 0)).sum()) for a, b in neighbours)  # pixel edges between parts
    if depth < RECURSE[0] and len(pieces) >= 2:
        again = [split_of(p.detection, median, depth + 1) for p in pieces]
        pieces = [q for p, (sub, _) in zip(pieces, again, strict=True) for q in (sub or [p])]
        cut += sum(c for sub, c in again if sub)
    return (pieces if len(pieces) >= 2 else None), cut


def collect(data: str, per_condition: int, seed: int) -> tuple[list[Frame], dict[str, list], float]:
    """Compose and detect as the bench does; measure every detection and its candidate split."""
    crops = load_crops(data)
    groups = conditions_of(crops, r"(\d+kD\d)")
    median = float(np.median([c.area for c in crops]))
    settings = DetectSettings(reference_area_px=median)
    rng = np.random.default_rng(seed)
    frames = []
    for name, members in groups.items():
        chosen = [members[i] for i in sorted(rng.permutation(len(members))[:per_condition])]
        for clusters in (False, True):
            compose = ComposeSettings(
                pair_fraction=PAIR_FRACTION if clusters else 0.0,
                triple_fraction=TRIPLE_FRACTION if clusters else 0.0,
                seed=seed + int(clusters),
            )
            for composed in compose_fields(chosen, compose):
                noise = np.random.default_rng([seed, composed.number])
                image = render(composed.canvas, composed.noise_sigma, noise, JITTER_PX)
                found = detect(image, settings)
                started = time.perf_counter()
                splits = [split_of(d, median) for d in found]
                SPLIT_TIME[0] += time.perf_counter() - started
                SPLIT_TIME[1] += len(found)
                results = outcomes(composed.objects, found, image.shape)
                frame = Frame(
                    name,
                    composed.objects,
                    image.shape,
                    found,
                    [cluster_features(d.mask[::FACTOR, ::FACTOR], d.area, median) for d in found],
                    detection_labels(results, found),
                    [s[0] for s in splits],
                    [s[1] for s in splits],
                )
                frame.role = roles(frame, results)
                frames.append(frame)
    return frames, groups, median


def roles(frame: Frame, results: list) -> list[str]:
    """Per detection: the single cell it is, or whether its split cuts its pair into its cells."""
    role = ["other"] * len(frame.detections)
    frame.kind = ["none"] * len(frame.detections)
    for index, result in enumerate(results):
        if result.merged < 0:
            continue
        frame.kind[result.merged] = result.kind
        if result.kind == "single":
            role[result.merged] = "single"
        elif frame.parts[result.merged] is None:
            role[result.merged] = "no-parts"
        else:
            split = replaced(frame, {result.merged: [p.detection for p in frame.parts[result.merged]]})
            again = outcomes(frame.objects, split, frame.shape)[index]
            role[result.merged] = "split-right" if again.result == SPLIT else "split-wrong"
    return role


def replaced(frame: Frame, by: dict[int, list[Detection]]) -> list[Detection]:
    detections = []
    for index, found in enumerate(frame.detections):
        detections += by.get(index, [found])
    return detections


def split_figures(frame: Frame, index: int, median: float) -> np.ndarray:
    parts = frame.parts[index]
    figures = np.array([p.figures for p in parts])
    areas = np.array([p.detection.area for p in parts], dtype=np.float64)
    smallest_radius = math.sqrt(areas.min() / (FACTOR * FACTOR) / math.pi)
    return np.concatenate(
        [
            frame.figures[index],
            [math.log(areas.min() / median), math.log(areas.max() / median)],
            [figures[:, 1].min(), figures[:, 2].max(), frame.cut_px[index] / smallest_radius, len(parts)],
        ]
    )


@dataclass
class Fold:
    """One left-out condition's flag rule (and split rule), learnt on the other conditions."""

    left_out: str
    flag: object  # ClusterRule
    shift: float  # log_area: the crops' median against the training conditions'
    split: tuple | None = None  # (mean, scale, weights, bias) of the split regression
    split_quantiles: np.ndarray | None = None

    def flag_scores(self, figures: np.ndarray) -> np.ndarray:
        shifted = np.atleast_2d(figures).copy()
        shifted[:, FEATURES.index("log_area")] += self.shift
        return self.flag.scores(shifted)

    def split_score(self, row: np.ndarray) -> float:
        mean, scale, weights, bias = self.split
        return float((row - mean) / scale @ weights + bias)


def learn_fold(frames: list[Frame], groups: dict, median: float, left_out: str) -> Fold:
    reference = float(np.median([c.area for name, crops in groups.items() if name != left_out for c in crops]))
    shift = math.log(median / reference)
    rows, labels = [], []
    for frame in frames:
        if frame.condition != left_out:
            for figures, label in zip(frame.figures, frame.labels, strict=True):
                if label >= 0:
                    rows.append(figures + shift * np.eye(len(FEATURES))[FEATURES.index("log_area")])
                    labels.append(label)
    fold = Fold(left_out, learn(np.array(rows), np.array(labels), reference), shift)
    # The split regression: single cells against pairs its watershed cuts right (the flag left them).
    rows, labels, singles = [], [], []
    for frame in frames:
        if frame.condition == left_out:
            continue
        for index, role in enumerate(frame.role):
            if role == "single":
                singles.append(index if frame.parts[index] is not None else None)
            if frame.parts[index] is not None and role in ("single", "split-right"):
                rows.append(split_figures(frame, index, median))
                labels.append(int(role == "split-right"))
    rule = learn(np.array(rows), np.array(labels), reference)
    fold.split = (np.array(rule.mean), np.array(rule.scale), np.array(rule.weights), rule.bias)
    scores = [
        fold.split_score(split_figures(f, i, median)) if f.parts[i] is not None else -np.inf
        for f in frames
        if f.condition != left_out
        for i, role in enumerate(f.role)
        if role == "single"
    ]
    fold.split_quantiles = np.array(scores)
    return fold


def score_fold(fold: Fold, frames: list[Frame], flag_rate: float, policy: str, split_rate: float, median: float):
    """(singles found, singles flagged or split, clusters found, clusters split or flagged)."""
    threshold = fold.flag.threshold(flag_rate)  # as the bench's learnt_loco
    split_threshold = np.quantile(fold.split_quantiles, 1.0 - split_rate) if policy == "split" else math.inf
    tally = [0, 0, 0, 0]
    for frame in (f for f in frames if f.condition == fold.left_out):
        by, flags = {}, []
        for index, figures in enumerate(frame.figures):
            flagged = bool(fold.flag_scores(figures)[0] > threshold) or bool(compact_pairs(figures)[0])
            parts = frame.parts[index]
            if policy == "oracle":
                cut = frame.role[index] == "split-right"
            else:
                cut = parts is not None and fold.split_score(split_figures(frame, index, median)) > split_threshold
            if cut and not flagged:
                pieces = [replace(p.detection, cluster=bool(fold.flag_scores(p.figures)[0] > threshold)) for p in parts]
                by[index] = pieces
            else:
                flags.append((index, flagged))
        for index, flagged in flags:
            by[index] = [replace(frame.detections[index], cluster=flagged)]
        detections = replaced(frame, by)
        for result in outcomes(frame.objects, detections, frame.shape):
            outcome = judged(result, detections)
            if outcome == LOST:
                continue
            single = result.kind == "single"
            tally[0 if single else 2] += 1
            tally[1 if single else 3] += outcome in (FLAGGED, SPLIT)
    return tally


def summarise(per: dict[str, list[int]]) -> dict:
    singles = {name: t[1] / t[0] for name, t in per.items()}
    clusters = {name: t[3] / t[2] for name, t in per.items()}
    return {
        "singles_wrong_mean": round(float(np.mean(list(singles.values()))), 4),
        "singles_wrong_worst": round(max(singles.values()), 4),
        "clusters_split_or_flagged_mean": round(float(np.mean(list(clusters.values()))), 4),
        "clusters_split_or_flagged_worst": round(min(clusters.values()), 4),
        "by_condition": {name: [t[1], t[0], t[3], t[2]] for name, t in per.items()},
    }


def diagnosis(frames: list[Frame]) -> dict:
    """How the merged pairs and triples and the single cells fall, by their watershed candidate."""
    counts: dict[str, int] = {}
    waists: dict[str, list[float]] = {}
    for frame in frames:
        for index, role in enumerate(frame.role):
            if role == "other":
                continue
            kind = frame.kind[index]
            if frame.parts[index] is None:
                key = f"{kind}: no two thick parts"
            else:
                key = f"{kind}: " + ("two thick parts" if role == "single" else f"watershed {role}")
            counts[key] = counts.get(key, 0) + 1
            if frame.parts[index] is not None:
                waists.setdefault(key, []).append(float(frame.figures[index][FEATURES.index("waist")]))
    quartiles = {k: [round(float(q), 2) for q in np.percentile(v, [25, 50, 75])] for k, v in waists.items()}
    return {"detections": counts, "waist_quartiles": quartiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--per-condition", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--recurse", type=int, default=0, help="split each part this many times more")
    args = parser.parse_args()
    RECURSE[0] = args.recurse
    started = time.perf_counter()
    frames, groups, median = collect(args.data, args.per_condition, args.seed)
    folds = [learn_fold(frames, groups, median, name) for name in groups]
    variants = {f"flag {rate}": (rate, "flag", 0.0) for rate in FLAG_RATES}
    variants |= {f"flag 0.05 + split {rate}": (0.05, "split", rate) for rate in SPLIT_RATES}
    # a lower flag rate with a split: the same cost to single cells as the flag alone at 5 %?
    variants |= {f"flag {flag} + split {rate}": (flag, "split", rate) for flag in (0.03, 0.04) for rate in SPLIT_RATES}
    variants |= {"flag 0.05 + oracle split": (0.05, "oracle", 0.0), "flag 0.1 + oracle split": (0.1, "oracle", 0.0)}
    result = {"data": args.data, "per_condition": args.per_condition, "seed": args.seed, "recurse": args.recurse}
    result["variants"] = {}
    for name, (rate, policy, split_rate) in variants.items():
        per = {fold.left_out: score_fold(fold, frames, rate, policy, split_rate, median) for fold in folds}
        result["variants"][name] = summarise(per)
        s = result["variants"][name]
        print(
            f"{name}: singles {100 * s['singles_wrong_mean']:.1f} % (worst {100 * s['singles_wrong_worst']:.1f} %), "
            f"pairs+triples {100 * s['clusters_split_or_flagged_mean']:.1f} % "
            f"(worst {100 * s['clusters_split_or_flagged_worst']:.1f} %)",
            flush=True,
        )
    result["diagnosis"] = diagnosis(frames)
    result["split_ms_per_detection"] = round(1000 * SPLIT_TIME[0] / max(SPLIT_TIME[1], 1), 2)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"finding the split: {result['split_ms_per_detection']} ms a detection (its figures and flags not counted)")
    print(json.dumps(result["diagnosis"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
