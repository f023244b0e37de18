"""Teaching a small, fast model from a large one: a teacher's answers on fixed augmented views.

The teacher's fit (``--distill-views K``) draws K augmented views of every cell, each from its
own seed, and records every model it trains (each cross-validation fold's and the final
one) scoring them: NAME.distill.npz beside the model (a few hundred KB; not needed on a Pi).
A student's fit (``--teacher NAME``) draws the very same views again from those seeds (the
same windows, augmentation and code, finished at its own input size) and learns from a mix
of the true label and the teacher's probability for that view.

In cross-validation each fold's student learns from the teacher of the same fold, which never
saw the held-out group: a teacher that had seen it would pass its answers to the student.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.classify.preprocess import finish_input
from train.augment import AugmentSettings, augment_window
from train.dataset import Dataset, DatasetError
from train.trainer import SoftTargets

DISTILL_SUFFIX = ".distill.npz"
FINAL = "final"  # the model trained on every cell; folds are named by their held-out group
FORMAT = "metascope-distill/1"


def distill_path_for(model_path: str | os.PathLike[str]) -> Path:
    """models/NAME.tflite or models/NAME -> models/NAME.distill.npz."""
    path = Path(model_path)
    stem = path.stem if path.suffix == ".tflite" else path.name
    return path.with_name(stem + DISTILL_SUFFIX)


def cell_digests(windows: np.ndarray) -> list[str]:
    """A short fingerprint of each cell's window: the student must see the teacher's very pixels."""
    return [hashlib.blake2b(window.tobytes(), digest_size=8).hexdigest() for window in windows]


def fixed_views(dataset: Dataset, count: int, seed: int, augment: AugmentSettings) -> np.ndarray:
    """(N, count, size, size) uint8: view v of cell i is drawn from its own seed (seed, i, v), so
    any subset of cells, and any input size, gets exactly the same augmented windows; each from
    the window the fit trains on (Dataset.drawn_windows: with served inputs, one rendering)."""
    spec = dataset.spec
    views = np.empty((len(dataset), count, spec.size, spec.size), dtype=np.uint8)
    for index in range(len(dataset)):
        for view in range(count):
            rng = np.random.default_rng([seed, index, view])
            window = dataset.drawn_windows(np.array([index]), rng)[0]
            views[index, view] = finish_input(augment_window(window, rng, augment), spec)
    return views


@dataclass
class TeacherOutputs:
    """Every teacher model's probability for every fixed view of every cell (NaN: not scored,
    e.g. a fold's held-out cells, which its student never trains on)."""

    teacher: str  # the teacher model's name
    paths: list[str]  # cells, relative to the data folder, in the teacher's order
    digests: list[str]  # cell_digests of their windows
    window_px: int
    seed: int
    augment: AugmentSettings
    models: list[str]  # fold names, then FINAL
    probabilities: np.ndarray  # (models, cells, views) float16

    @property
    def views(self) -> int:
        return int(self.probabilities.shape[2])

    def for_model(self, name: str, cells: np.ndarray) -> np.ndarray:
        """(len(cells), views) probabilities of model ``name`` for the given cell positions."""
        if name not in self.models:
            raise DatasetError(
                f"teacher {self.teacher} has no model for {name!r} (it has {', '.join(self.models)}): "
                "fit the teacher with the same --cv folds"
            )
        probabilities = self.probabilities[self.models.index(name)][cells].astype(np.float32)
        if np.isnan(probabilities).any():
            raise DatasetError(f"teacher {self.teacher}'s model {name!r} did not score every cell the student uses")
        return probabilities

    def check_matches(self, dataset: Dataset) -> None:
        """The student must train on exactly the teacher's cells, cut the same way."""
        if dataset.spec.window_px != self.window_px:
            raise DatasetError(
                f"the student's window ({dataset.spec.window_px} px) is not the teacher's ({self.window_px} px); "
                f"fit the student with --window-px {self.window_px}"
            )
        paths = dataset.relative_paths()
        if paths != self.paths:
            missing = sorted(set(self.paths) - set(paths))[:3]
            extra = sorted(set(paths) - set(self.paths))[:3]
            raise DatasetError(
                f"the student's cells are not the teacher's ({len(paths)} vs {len(self.paths)}; "
                f"only the teacher's: {missing or 'none'}; only the student's: {extra or 'none'}): "
                "fit both from the same data folder"
            )
        digests = cell_digests(dataset.trained_windows())
        changed = [path for path, a, b in zip(paths, digests, self.digests, strict=True) if a != b]
        if changed:
            raise DatasetError(
                f"the student's cells are not the teacher's: {len(changed)} file(s) have other pixels "
                f"(e.g. {', '.join(changed[:3])}): fit both from the same data folder, with the same --inputs"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        meta = {
            "format": FORMAT,
            "teacher": self.teacher,
            "window_px": self.window_px,
            "seed": self.seed,
            "augment": self.augment.to_dict(),
            "models": self.models,
        }
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            meta=np.array(json.dumps(meta)),
            paths=np.array(self.paths),
            digests=np.array(self.digests),
            probabilities=self.probabilities.astype(np.float16),
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TeacherOutputs:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(
                f"{path}: no teacher outputs; fit the teacher with --cv --distill-views K first (make model does)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                paths = [str(p) for p in data["paths"]]
                digests = [str(d) for d in data["digests"]]
                probabilities = data["probabilities"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: not a teacher-outputs file: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise DatasetError(f"{path}: format {meta.get('format')!r}, expected {FORMAT}")
        return cls(
            teacher=meta["teacher"],
            paths=paths,
            digests=digests,
            window_px=int(meta["window_px"]),
            seed=int(meta["seed"]),
            augment=AugmentSettings.from_dict(meta["augment"]),
            models=list(meta["models"]),
            probabilities=probabilities,
        )


class Teacher:
    """A teacher's outputs made ready for a student (student side): the same views, at the
    student's input size."""

    def __init__(self, outputs: TeacherOutputs, dataset: Dataset):
        outputs.check_matches(dataset)
        if dataset.windows is None:
            raise ValueError("learning from a teacher needs the cells' windows")
        self.outputs = outputs
        self.views = fixed_views(dataset, outputs.views, outputs.seed, outputs.augment)

    def targets(self, model: str, cells: np.ndarray) -> SoftTargets:
        """What the student of ``model`` (a fold name, or FINAL) learns from on ``cells``."""
        return SoftTargets(self.views[cells], self.outputs.for_model(model, cells))


class TeacherRecorder:
    """Collects, model by model, a teacher's probabilities on the fixed views (teacher side)."""

    def __init__(self, teacher: str, dataset: Dataset, views: int, seed: int, augment: AugmentSettings):
        if dataset.windows is None:
            raise ValueError("recording teacher outputs needs the cells' windows")
        self.teacher, self.dataset, self.seed, self.augment = teacher, dataset, seed, augment
        self.views = fixed_views(dataset, views, seed, augment)
        self.models: list[str] = []
        self.rows: list[np.ndarray] = []

    def record(self, name: str, cells: Sequence[int] | np.ndarray, predict) -> None:
        """``predict``: uint8 (M, size, size) -> probabilities (M,); scores ``cells``' views."""
        cells = np.asarray(cells)
        count = self.views.shape[1]
        row = np.full((len(self.dataset), count), np.nan, dtype=np.float32)
        if len(cells):
            flat = self.views[cells].reshape(-1, *self.views.shape[2:])
            row[cells] = np.asarray(predict(flat), dtype=np.float32).reshape(len(cells), count)
        self.models.append(name)
        self.rows.append(row)

    def outputs(self) -> TeacherOutputs:
        return TeacherOutputs(
            teacher=self.teacher,
            paths=self.dataset.relative_paths(),
            digests=cell_digests(self.dataset.trained_windows()),
            window_px=self.dataset.spec.window_px,
            seed=self.seed,
            augment=self.augment,
            models=list(self.models),
            probabilities=np.stack(self.rows).astype(np.float16),
        )
