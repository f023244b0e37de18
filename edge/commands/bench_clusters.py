"""`metascope bench clusters`: how often the cluster flag is right, per culture condition, on frames
composed from real single-cell crops (edge/capture/composed.py) and run through the Pi's detector.

For each condition (a folder below each label folder, or --group-by's first group), a sample of
its crops is composed twice: once as single cells apart from each other, once as touching pairs
and triples (3 pairs to 1 triple by object). Each frame goes through detection with every rule
measured; each truth object's outcome (edge/cells/cluster_truth.py) gives the two figures the
rule is held to: the share of single cells flagged as clusters (or cut in two), and the share of
touching pairs (and triples) split into their cells or flagged. The rules:

- ``fixed_6000``: the shape rule with the fixed 6,000 px cluster area (a card without training
  cell areas; the rule before the learnt one).
- ``card_4x_median``: the same with 4 x the crops' median area (a card that records it).
- ``learnt_shipped``: the learnt rule as shipped (edge/cells/cluster_rule.json) with the crops'
  median area as its reference. Learnt from the shared crops: on them, an in-sample figure.
- ``learnt_loco``: the learnt rule relearnt with each condition left out (its reference area
  the other conditions' median) and measured on it: leave-one-condition-out, the honest figure
  for a culture it never saw.

``--write-rule PATH`` also learns the rule from every condition's frames and writes it there
(edge/cells/cluster_rule.json is made so).
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.capture.composed import ComposeSettings, Crop, compose_fields, load_crops, render
from edge.cells.cluster_features import FEATURES, cluster_features
from edge.cells.cluster_rule import RULE_PATH, ClusterRule, compact_pairs, learn
from edge.cells.cluster_truth import FLAGGED, LOST, MISSED, SPLIT, Outcome, judged, outcomes
from edge.cells.detect import Detection, DetectSettings, detect
from edge.cells.scale import CLUSTER_AREA_MULTIPLE
from edge.commands.benchmarks import machine

PAIR_FRACTION, TRIPLE_FRACTION = 0.75, 0.25  # of objects in the cluster frames
JITTER_PX = 0.3


@dataclass
class Tally:
    """Outcomes of one kind of object (single cells, or pairs and triples) under one rule."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, result: str) -> None:
        self.counts[result] += 1

    def merge(self, other: Tally) -> None:
        for key, value in other.counts.items():
            self.counts[key] += value

    @property
    def found(self) -> int:
        return sum(v for k, v in self.counts.items() if k != LOST)

    def share(self, *results: str) -> float | None:
        """Share of the found objects with one of ``results`` (None: nothing found)."""
        return round(sum(self.counts[r] for r in results) / self.found, 4) if self.found else None

    def to_dict(self, single: bool) -> dict[str, Any]:
        figures: dict[str, Any] = {"objects": self.found + self.counts[LOST], "found": self.found}
        figures |= {k: v for k, v in sorted(self.counts.items())}
        if single:
            figures["flagged_share"] = self.share(FLAGGED)
            figures["split_share"] = self.share(SPLIT)
            figures["wrong_share"] = self.share(FLAGGED, SPLIT)
        else:
            figures["split_or_flagged_share"] = self.share(FLAGGED, SPLIT)
            figures["missed_share"] = self.share(MISSED)
        return figures


@dataclass
class Scored:
    """One frame's truth outcomes and its detections' flags under each rule."""

    condition: str
    outcomes: list[Outcome]
    flags: dict[str, list[bool]]  # rule -> per detection
    features: list[np.ndarray]  # per detection (for the learnt rule), empty when not measured
    labels: list[int]  # per detection: 1 where it holds two or more cells, 0 one, -1 unknown


def conditions_of(crops: Sequence[Crop], group_by: str | None) -> dict[str, list[Crop]]:
    """Crops by culture condition: --group-by's first group (or whole match) on the crop's path,
    or the folder below its label folder."""
    pattern = re.compile(group_by) if group_by else None
    groups: dict[str, list[Crop]] = defaultdict(list)
    for crop in crops:
        if pattern is not None:
            found = pattern.search(crop.source)
            if found is None:
                continue
            groups[found.group(1) if found.groups() else found.group(0)].append(crop)
        else:
            parts = crop.source.split("/")
            groups[parts[1] if len(parts) > 2 else parts[0]].append(crop)
    return dict(sorted(groups.items()))


def detection_labels(objects_outcomes: Sequence[Outcome], detections: Sequence[Detection]) -> list[int]:
    """What each detection truly is: 1 (two or more cells together) where it is the main piece of
    a pair or triple that it was not split from, 0 (one cell) where it lies on a single cell or is
    one cell split off a cluster, -1 where it lies on nothing composed."""
    labels = [-1] * len(detections)
    for outcome in objects_outcomes:
        for piece in outcome.pieces:
            labels[piece] = 0
        if outcome.kind != "single" and outcome.result not in (SPLIT, LOST) and outcome.merged >= 0:
            labels[outcome.merged] = 1
    return labels


def run_frames(
    condition: str,
    crops: Sequence[Crop],
    rules: dict[str, DetectSettings],
    measure: Callable[[np.ndarray, list[Detection]], list[np.ndarray]] | None,
    seed: int,
) -> list[Scored]:
    """Compose the condition's singles frames and cluster frames, detect, score every rule."""
    scored = []
    for clusters in (False, True):
        settings = ComposeSettings(
            pair_fraction=PAIR_FRACTION if clusters else 0.0,
            triple_fraction=TRIPLE_FRACTION if clusters else 0.0,
            seed=seed + int(clusters),
        )
        for composed in compose_fields(crops, settings):
            frame = render(composed.canvas, composed.noise_sigma, np.random.default_rng([seed, composed.number]),
                           JITTER_PX)  # fmt: skip
            flags, found = {}, []
            for name, rule in rules.items():
                found = detect(frame, rule)
                flags[name] = [d.cluster for d in found]
            results = outcomes(composed.objects, found, frame.shape)
            features = measure(frame, found) if measure else []
            scored.append(Scored(condition, results, flags, features, detection_labels(results, found)))
    return scored


def tally(scored: Sequence[Scored], rule: str, flags_of: Callable[[Scored], Sequence[bool]] | None = None
          ) -> tuple[Tally, Tally]:  # fmt: skip
    """(singles, clusters) tallies of ``rule``'s flags (or ``flags_of``'s) over the frames."""
    singles, clusters = Tally(), Tally()
    for frame in scored:
        flags = list(flags_of(frame) if flags_of else frame.flags[rule])
        stand_ins = [_Flag(flag) for flag in flags]
        for outcome in frame.outcomes:
            (singles if outcome.kind == "single" else clusters).add(judged(outcome, stand_ins))
    return singles, clusters


@dataclass(frozen=True)
class _Flag:
    cluster: bool


def summary(per_condition: dict[str, dict[str, Any]], rule: str) -> dict[str, Any]:
    """Worst and mean over the conditions of the two figures a rule is held to."""
    singles = [c[rule]["singles"]["wrong_share"] for c in per_condition.values() if rule in c]
    pairs = [c[rule]["clusters"]["split_or_flagged_share"] for c in per_condition.values() if rule in c]
    singles = [s for s in singles if s is not None]
    pairs = [p for p in pairs if p is not None]
    if not singles or not pairs:
        return {}
    return {
        "singles_wrong_mean": round(float(np.mean(singles)), 4),
        "singles_wrong_worst": max(singles),
        "clusters_split_or_flagged_mean": round(float(np.mean(pairs)), 4),
        "clusters_split_or_flagged_worst": min(pairs),
    }


class LeaveOneOut:
    """The learnt rule relearnt without one condition, its flags on that condition's frames."""

    def __init__(self, groups: dict[str, list[Crop]], median: float, flag_rate: float):
        self.groups, self.median, self.flag_rate = groups, median, flag_rate

    def learn(self, scored: list[Scored], left_out: str | None, **trained_on: Any) -> ClusterRule:
        """The rule from every detection of known truth outside ``left_out``, its areas measured
        against those conditions' median crop."""
        reference = float(np.median([c.area for name, crops in self.groups.items() if name != left_out for c in crops]))
        shift = math.log(self.median / reference)  # log_area was measured against every crop's median
        rows, labels = [], []
        for frame in scored:
            if frame.condition == left_out:
                continue
            for figures, label in zip(frame.features, frame.labels, strict=True):
                if label >= 0:
                    rows.append(figures + _area_shift(shift))
                    labels.append(label)
        return learn(np.array(rows), np.array(labels), reference, **trained_on)

    def __call__(self, scored: list[Scored], condition: str) -> Callable[[Scored], Sequence[bool]]:
        rule = self.learn(scored, condition)
        shift = _area_shift(math.log(self.median / rule.reference_area_px))
        threshold = rule.threshold(self.flag_rate)

        def flags(frame: Scored) -> list[bool]:
            if not frame.features:
                return []
            figures = np.array(frame.features)
            return ((rule.scores(figures + shift) > threshold) | compact_pairs(figures)).tolist()

        return flags


def _area_shift(value: float) -> np.ndarray:
    """Added to a row of figures: log_area against another reference area."""
    shift = np.zeros(len(FEATURES))
    shift[FEATURES.index("log_area")] = value
    return shift


def figures(
    scored: list[Scored],
    condition: str,
    rules: list[str],
    loco: Callable[[list[Scored], str], Callable[[Scored], Sequence[bool]]] | None,
) -> dict[str, Any]:
    """One condition's tallies under each rule (and the rule learnt without it, with ``loco``)."""
    frames = [s for s in scored if s.condition == condition]
    entry: dict[str, Any] = {}
    for rule in rules:
        singles, clusters = tally(frames, rule)
        entry[rule] = {"singles": singles.to_dict(True), "clusters": clusters.to_dict(False)}
    if loco is not None:
        singles, clusters = tally(frames, "", loco(scored, condition))
        entry["learnt_loco"] = {"singles": singles.to_dict(True), "clusters": clusters.to_dict(False)}
    return entry


def rules_measured(median: float, flag_rate: float) -> dict[str, DetectSettings]:
    """The rules run through detection (the module's docstring), ``median`` the crops' median area."""
    rules = {
        "fixed_6000": DetectSettings(cluster_rule="shape"),
        "card_4x_median": DetectSettings(cluster_rule="shape", cluster_area_px=round(CLUSTER_AREA_MULTIPLE * median)),
    }
    if RULE_PATH.exists():
        rules["learnt_shipped"] = DetectSettings(cluster_flag_rate=flag_rate, reference_area_px=median)
    return rules


def bench_clusters(
    data: str | Path,
    per_condition: int = 60,
    group_by: str | None = None,
    seed: int = 0,
    flag_rate: float = DetectSettings.cluster_flag_rate,
    write_rule: str | Path | None = None,
) -> dict[str, Any]:
    """The benchmark's JSON: per condition and rule, singles flagged or split, clusters split or
    flagged (see the module's docstring for the rules)."""
    started = time.perf_counter()
    crops = load_crops(data)
    if not crops:
        raise ValueError(f"{data}: no masked crops found")
    groups = conditions_of(crops, group_by)
    median = float(np.median([c.area for c in crops]))
    rules = rules_measured(median, flag_rate)
    factor = DetectSettings.downscale

    def measure(frame: np.ndarray, found: list[Detection]) -> list[np.ndarray]:
        return [cluster_features(d.mask[::factor, ::factor], d.area, median) for d in found]

    loco = LeaveOneOut(groups, median, flag_rate)
    rng = np.random.default_rng(seed)
    scored: list[Scored] = []
    sampled = {}
    for name, members in groups.items():
        chosen = [members[i] for i in sorted(rng.permutation(len(members))[:per_condition])]
        sampled[name] = len(chosen)
        scored += run_frames(name, chosen, rules, measure, seed)
    if write_rule:
        rule = loco.learn(scored, None, data=str(data), crops=len(crops), per_condition=per_condition, seed=seed)
        Path(write_rule).write_text(rule.to_json())
    by_condition = {
        name: {"crops": len(groups[name]), "sampled": sampled[name]} | figures(scored, name, list(rules), loco)
        for name in groups
    }
    names = [*rules, "learnt_loco"]
    return {
        "benchmark": "clusters",
        "data": str(data),
        "crops": len(crops),
        "crops_median_area_px": median,
        "group_by": group_by or "the folder below each label folder",
        "per_condition_sample": per_condition,
        "seed": seed,
        "flag_rate": flag_rate,
        "compose": {
            "width": ComposeSettings.width,
            "height": ComposeSettings.height,
            "pair_fraction": PAIR_FRACTION,
            "triple_fraction": TRIPLE_FRACTION,
            "jitter_px": JITTER_PX,
        },
        "rules": names,
        "summary": {rule: summary(by_condition, rule) for rule in names},
        "conditions": by_condition,
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }


def summary_line(result: dict[str, Any]) -> str:
    """One line a person reads: each rule's worst condition for both figures."""
    parts = []
    for rule, figures in result["summary"].items():
        if figures:
            singles = f"{_pc(figures['singles_wrong_mean'])} (worst {_pc(figures['singles_wrong_worst'])})"
            clusters = (
                f"{_pc(figures['clusters_split_or_flagged_mean'])} "
                f"(worst {_pc(figures['clusters_split_or_flagged_worst'])})"
            )
            parts.append(f"{rule}: singles flagged or split {singles}, clusters split or flagged {clusters}")
    return "; ".join(parts)


def _pc(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.0f} %"
