"""The soak's short form (tests/soak.py; `make soak` is the long one): every scheduled fault
(a corrupt database, kill -9, a folder replaced by a file or read-only, a full disk, a stalled
process, kill -9 and a stall on the still source, and the camera busy and stalled through the
fake) is injected into a running `metascope run` and recovered from, no committed row is lost,
and the frames not stored while the disk was full are exactly the service's own count."""

from __future__ import annotations

from pathlib import Path

from soak import run_soak


def test_a_rig_recovers_from_every_scheduled_fault_and_loses_no_committed_row(tiny_model, tmp_path: Path) -> None:
    result = run_soak(tmp_path, str(tiny_model[0]), fault_frames=40, long_frames=400, cells=6, fps=20.0, threads=1)
    assert result["faults_injected"] >= 10, result["faults"]
    assert result["read_only_injected"], "the snapshots folder could not be made read-only"
    assert result["faults_recovered"] == result["faults_injected"], result["faults"]
    assert result["rows_lost"] == 0
    assert result["last_exit_code"] == 0 and result["still_field_exit_code"] == 0
    assert result["last_run_unsaved_frames"] == result["last_run_classified_minus_stored"]
    if result["disk_full_injected"]:
        assert result["frames_not_stored_by_design"]["disk_full"] > 0
    assert result["frames"] > 5 * 40 and result["cells"] > 0
    assert result["uninterrupted"]["exit_code"] == 0 and result["uninterrupted"]["resident_drift_mb"] is not None
