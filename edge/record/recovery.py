"""Cells a run never closed itself: the run was killed, crashed or lost power, or the batch that
held a cell's row could not be committed (a full disk). Each such cell is rebuilt from its stored
views, and a run that never ended is closed with what it stored."""

from __future__ import annotations

import sqlite3

from edge.cells.logits import mean_of_logits

RECOVERED = "closed from its stored views (its own row was lost: an unclean stop or a failed write)"
UNCLEAN_STOP = "did not stop cleanly (killed, crashed or powered off); closed at the next start"

_ORPHAN_VIEWS = (
    "SELECT v.track, v.view, v.probability, v.label, v.captured_at, v.cluster, v.area_px, v.centroid_x,"
    " v.centroid_y, f.field FROM views v LEFT JOIN frames f ON f.id = v.frame_id"
    " WHERE v.run_id = ? AND v.track IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM cells c WHERE c.run_id = v.run_id AND c.track = v.track)"
    " ORDER BY v.track, v.id"
)
_INSERT_CELL = (
    "INSERT INTO cells (run_id, track, field, first_seen_at, last_seen_at, frames_seen, views, probability,"
    " label, cluster, area_px, centroid_x, centroid_y, reclassified, end_reason)"
    " VALUES (:run_id, :track, :field, :first_seen_at, :last_seen_at, :frames_seen, :views, :probability,"
    " :label, :cluster, :area_px, :centroid_x, :centroid_y, :reclassified, :end_reason)"
)


def close_cells_from_views(db: sqlite3.Connection, run_id: int) -> int:
    """Write a ``cells`` row for each cell of ``run_id`` that has stored views but no row of its
    own. Its call is the mean logit of the views since its views last started again (view 0);
    first and last seen and frames seen can only count the frames it was viewed in. Returns how
    many it wrote."""
    cursor = db.execute(_ORPHAN_VIEWS, (run_id,))
    cursor.row_factory = sqlite3.Row
    threshold = db.execute("SELECT coalesce(threshold, 0.5) FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    by_track: dict[int, list[sqlite3.Row]] = {}
    for row in cursor:
        by_track.setdefault(row["track"], []).append(row)
    for track, views in by_track.items():
        db.execute(_INSERT_CELL, _recovered_cell(run_id, track, views, threshold))
    return len(by_track)


def _recovered_cell(run_id: int, track: int, views: list[sqlite3.Row], threshold: float) -> dict[str, object]:
    starts = [index for index, view in enumerate(views) if view["view"] == 0]
    series = views[starts[-1] :] if starts else views
    probability = mean_of_logits(view["probability"] for view in series)
    positive = probability >= threshold
    # The mean lies between the views' logits, so a view on its side of the threshold exists
    # and names the label (the run does not record the labels themselves).
    label = next(
        (view["label"] for view in series if (view["probability"] >= threshold) == positive), series[-1]["label"]
    )
    last = views[-1]
    return {
        "run_id": run_id,
        "track": track,
        "field": last["field"] or 0,
        "first_seen_at": views[0]["captured_at"],
        "last_seen_at": last["captured_at"],
        "frames_seen": len({view["captured_at"] for view in views}),
        "views": len(series),
        "probability": round(probability, 6),
        "label": label,
        "cluster": last["cluster"],
        "area_px": last["area_px"],
        "centroid_x": last["centroid_x"],
        "centroid_y": last["centroid_y"],
        "reclassified": max(len(starts) - 1, 0),
        "end_reason": RECOVERED,
    }


def close_unfinished_runs(db: sqlite3.Connection) -> list[tuple[int, int, int]]:
    """Close the runs that never stopped cleanly: their end is their last commit, their totals
    what they stored, and each cell they were still following becomes a row made from its stored
    views. Returns (run id, frames, cells closed) for each."""
    closed = []
    for (run_id,) in db.execute("SELECT id FROM runs WHERE ended_at IS NULL").fetchall():
        recovered = close_cells_from_views(db, run_id)
        frames, views, cells = (
            db.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()[0]
            for table in ("frames", "views", "cells")
        )
        db.execute(
            "UPDATE runs SET ended_at = coalesce(updated_at, started_at), exit_reason = ?, frames = ?, views = ?,"
            " cells = ? WHERE id = ?",
            (UNCLEAN_STOP, frames, views, cells, run_id),
        )
        closed.append((int(run_id), int(frames), recovered))
    return closed
