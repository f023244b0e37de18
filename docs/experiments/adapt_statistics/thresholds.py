"""The threshold lever, from study.py's tracked calls: is 0.5 the threshold a lab should use?

For each held-out condition, the threshold is chosen on the other conditions' held-out tracked
calls (each made by a model that never saw its own condition, as `fit --cv --frames` has them
when it writes a card) as the one with the highest balanced accuracy over them, then applied to
this condition's calls: leave-one-condition-out, so the figure is the one a new culture would get.

    python docs/experiments/adapt_statistics/thresholds.py results.jsonl [--which before|adapted]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CANDIDATES = np.round(np.arange(0.05, 0.951, 0.01), 2)


def balanced_accuracy(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    called = p >= threshold
    return float((called[y == 1].mean() + (~called[y == 0]).mean()) / 2)


def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    return float(CANDIDATES[int(np.argmax([balanced_accuracy(y, p, t) for t in CANDIDATES]))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--which", default="before", choices=("before", "adapted"))
    args = parser.parse_args()
    folds = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    calls = {f["held_out"]: np.array(f[args.which]["tracked_calls"], dtype=np.float64) for f in folds}
    at_half, chosen = [], []
    for name, own in calls.items():
        others = np.concatenate([c for other, c in calls.items() if other != name])
        threshold = best_threshold(others[:, 0].astype(int), others[:, 1])
        y, p = own[:, 0].astype(int), own[:, 1]
        at_half.append(balanced_accuracy(y, p, 0.5))
        chosen.append(balanced_accuracy(y, p, threshold))
        print(f"{name}: threshold {threshold:.2f}, balanced accuracy at 0.5 {at_half[-1]:.3f} -> {chosen[-1]:.3f}")
    print(f"mean balanced accuracy at 0.5: {np.mean(at_half):.3f} (worst {min(at_half):.3f}); "
          f"threshold chosen on the other conditions: {np.mean(chosen):.3f} (worst {min(chosen):.3f})")  # fmt: skip
    pooled = np.concatenate(list(calls.values()))
    overall = best_threshold(pooled[:, 0].astype(int), pooled[:, 1])
    print(f"best threshold on every condition's calls together: {overall:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
