"""`metascope-train sort-crops`: a pulled folder's crops copied into DEST/<label>/<group>/ by the
rig's call, the training layout, for a person to correct (by moving files) before the next fit.
A group is one run of one database of one host (a slide, a culture), so a fair split never cuts
it. The pulled folder is only read. DEST/manifest.csv records every crop copied, with the rig's
call, and a crop already in it is never copied again: sorting after the next pull adds the new
crops and never undoes a correction."""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import UsageError
from train.results.by_model import split_by_model
from train.results.crops import NotACrop, verified_png
from train.results.pulled import PulledDatabase, PulledFolder, Unreadable

MANIFEST = "manifest.csv"
COLUMNS = ("file", "source", "host", "database", "run_id", "cell", "model", "call", "probability", "cluster",
           "sorted_at")  # fmt: skip


@dataclass
class Sorted:
    copied: Counter[str] = field(default_factory=Counter)  # crops copied, by label
    already: int = 0  # crops the manifest holds from an earlier sort
    not_read: list[str] = field(default_factory=list)


@dataclass
class Crop:
    database: PulledDatabase
    cell: dict[str, str]
    path: Path
    model: str

    @property
    def source(self) -> str:
        return str(self.path.relative_to(self.database.root))

    def target(self) -> str:
        """DEST-relative path: <label>/<host>_<database id>_run<run id>/<file>."""
        label, run_id, name = self.cell.get("label") or "", self.cell["run_id"], self.path.name
        group = f"{self.database.host}_{self.database.database_id[:8]}_run{run_id}"
        for part, what in ((label, "call (label)"), (group, "host or run id"), (name, "file name")):
            if not plain_name(part):
                raise Unreadable(f"its {what} {part!r} cannot name a folder or file: not copied")
        return f"{label}/{group}/{name}"


def plain_name(text: str) -> bool:
    """A name fit's loader sees as one folder or file (not hidden, no separator, nothing unprintable)."""
    return 0 < len(text) <= 200 and not text.startswith(".") and "/" not in text and text.isprintable()


def check_destination(pulled_dir: Path, dest: Path) -> None:
    """Refuse a DEST inside the pulled folder (the next pull or report would read it, and sorting
    would copy into what it reads) or holding it (fit DEST would read the pulled folder too)."""
    pulled_real, dest_real = pulled_dir.resolve(), dest.resolve()
    if dest_real == pulled_real or pulled_real in dest_real.parents:
        raise UsageError(
            f"{dest}: inside the pulled folder {pulled_dir}; sort into a folder of its own, e.g. ~/metascope-data"
        )
    if dest_real in pulled_real.parents:
        raise UsageError(f"{dest}: holds the pulled folder {pulled_dir}, which fit {dest} would read as a label folder")


def crops_of(pulled: PulledFolder, model: str | None) -> list[Crop]:
    """Every cell with a pulled crop, of the runs of ``model`` (a card name, or all)."""
    found = []
    for name, databases in split_by_model(pulled.databases):
        if model not in (None, name, name.split(" (")[0]):
            continue
        for database in databases:
            for cell in database.rows("cells"):
                if (path := database.crop_path(cell)) is not None:
                    found.append(Crop(database, cell, path, name))
    return found


def check_labels(crops: list[Crop], dest: Path) -> None:
    """Refuse a sort that would leave DEST with more than the two label folders fit takes (runs
    of models with other labels): nothing is copied, and the message names the models' labels."""
    labels = {crop.cell.get("label") or "" for crop in crops} - {""}
    existing = {p.name for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")} if dest.is_dir() else set()
    if len(labels | existing) <= 2:
        return
    by_model: dict[str, set[str]] = {}
    for crop in crops:
        by_model.setdefault(crop.model, set()).add(crop.cell.get("label") or "")
    models = "; ".join(f"{model}: {', '.join(sorted(calls - {''}))}" for model, calls in sorted(by_model.items()))
    held = f" ({dest} holds {', '.join(sorted(existing))})" if existing else ""
    raise UsageError(
        f"the calls would make {len(labels | existing)} label folders in {dest}{held}, and fit takes two; the "
        f"models' calls: {models}. Sort one model's crops with --model NAME, or into another folder"
    )


def sorted_before(dest: Path) -> set[str]:
    """The crops (their paths in the pulled folder) DEST's manifest holds."""
    path = dest / MANIFEST
    if not path.exists():
        return set()
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise UsageError(f"{path}: not a manifest sort-crops wrote (columns {', '.join(COLUMNS)})")
            return {row["source"] for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read the manifest of earlier sorts ({exc})") from None


def copy_exclusive(data: bytes, target: Path) -> None:
    """``data`` into a new file ``target``: never over an existing file, never through a link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def manifest_row(crop: Crop, file: str) -> dict[str, str]:
    cell = crop.cell
    return {
        "file": file, "source": crop.source, "host": crop.database.host, "database": crop.database.database_id,
        "run_id": cell["run_id"], "cell": cell.get("track", ""), "model": crop.model, "call": cell.get("label", ""),
        "probability": cell.get("probability", ""), "cluster": cell.get("cluster", ""),
        "sorted_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }  # fmt: skip


def sort_crops(pulled: PulledFolder, pulled_dir: Path, dest: Path, model: str | None = None) -> Sorted:
    """Copy every crop of ``pulled`` not sorted before into ``dest`` (see the module's docstring)."""
    check_destination(pulled_dir, dest)
    crops = crops_of(pulled, model)
    if model is not None and not crops:
        models = ", ".join(name for name, _ in split_by_model(pulled.databases)) or "none"
        raise UsageError(f"--model {model}: no crops of that model in {pulled_dir} (its models: {models})")
    check_labels(crops, dest)
    done = sorted_before(dest)
    result = Sorted(not_read=list(pulled.not_read))
    dest.mkdir(parents=True, exist_ok=True)
    new = not (dest / MANIFEST).exists()
    with (dest / MANIFEST).open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        if new:
            writer.writeheader()
        for crop in crops:
            if crop.source in done:
                result.already += 1
                continue
            try:
                file = crop.target()
                copy_exclusive(verified_png(crop.database.read_crop(crop.path)), dest / file)
            except (Unreadable, NotACrop) as exc:
                result.not_read.append(f"{crop.source}: {exc}")
                continue
            except FileExistsError:
                result.not_read.append(f"{crop.source}: {dest / file} exists already: not overwritten")
                continue
            writer.writerow(manifest_row(crop, file))
            handle.flush()  # the manifest names every file copied, even when a later one fails
            result.copied[crop.cell["label"]] += 1
    return result
