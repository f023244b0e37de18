"""Pulled results split by the model that made them: a probability means something only next
to others of the same model, so the report draws a histogram and a gallery per model. A model
is its card's name and the first digits of its sha256 (a retrained model keeps its name)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from train.results.pulled import PulledDatabase

UNKNOWN = "unknown (rows without their run)"


def model_of(run: dict[str, str]) -> str:
    name, sha256 = run.get("model_name") or "unnamed", (run.get("model_sha256") or "")[:8]
    return f"{name} ({sha256})" if sha256 else name


def only_runs(database: PulledDatabase, run_ids: set[str]) -> PulledDatabase:
    """``database`` holding only the rows of the runs ``run_ids``."""
    tables = {
        table: [row for row in rows if (row["id"] if table == "runs" else row["run_id"]) in run_ids]
        for table, rows in database.tables.items()
    }
    return dataclasses.replace(database, tables=tables)


def split_by_model(databases: Sequence[PulledDatabase]) -> list[tuple[str, list[PulledDatabase]]]:
    """(model, the databases holding only its runs) for every model, sorted by model; rows whose
    run row was not pulled go under UNKNOWN."""
    runs_by_model: dict[str, dict[int, set[str]]] = {}
    for index, database in enumerate(databases):
        known = {run["id"]: model_of(run) for run in database.rows("runs")}
        for run_id, model in known.items():
            runs_by_model.setdefault(model, {}).setdefault(index, set()).add(run_id)
        orphans = {row["run_id"] for table in ("cells", "frames") for row in database.rows(table)} - set(known)
        if orphans:
            runs_by_model.setdefault(UNKNOWN, {})[index] = orphans
    return [
        (model, [only_runs(databases[index], run_ids) for index, run_ids in sorted(by_database.items())])
        for model, by_database in sorted(runs_by_model.items())
    ]
