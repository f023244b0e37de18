"""`metascope bench`: the JSON the README's speed figures come from (structure, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

from edge.cli import main
from edge.commands.benchmarks import steal_percent


def test_pipeline_bench_writes_stage_percentiles_and_memory(tiny_model, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench" / "pipeline.json"
    status = main(
        ["bench", "pipeline", "--model", str(tiny_model[0]), "--cells", "5", "--frames", "60", "--out", str(out)]
    )
    capsys.readouterr()
    assert status == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 60 and result["exit_code"] == 0
    assert result["cells_per_frame"]["mean"] > 0
    for stage in ("detect", "preprocess", "infer", "store"):
        timing = result["stages"][stage]
        assert timing["n"] == 60 and 0 < timing["p50_ms"] <= timing["p99_ms"] <= timing["max_ms"]
    assert result["end_to_end"]["p50_ms"] >= result["stages"]["infer"]["p50_ms"]
    assert result["resident_mb"]["max"] > 0 and result["machine"]["cpus"] >= 1


def test_pipeline_bench_counts_model_calls_per_frame_on_a_still_and_a_moving_field(
    tiny_model, tmp_path: Path, capsys
) -> None:
    runs = {}
    for field in ("new", "still", "moving"):
        out = tmp_path / f"{field}.json"
        args = ["bench", "pipeline", "--model", str(tiny_model[0]), "--cells", "8", "--frames", "60"]
        assert main([*args, "--field", field, "--move-every", "20", "--out", str(out)]) == 0
        runs[field] = json.loads(out.read_text())
    capsys.readouterr()
    new, still, moving = runs["new"], runs["still"], runs["moving"]
    assert still["field"] == "still" and moving["move_every"] == 20
    # A new field each frame: every cell is new, every frame. A still one: only the views owed
    # after the warm-up, fewer than one a frame; a moving stage: its first views each move.
    assert new["views_per_frame"]["mean"] == new["cells_per_frame"]["mean"]
    assert still["views_per_frame"]["max"] == 0 and still["cells_found"] == still["cells_per_frame"]["max"]
    assert 0 < moving["views_per_frame"]["mean"] < new["views_per_frame"]["mean"]
    for result in runs.values():
        assert result["end_to_end"]["n"] == 60 and result["views"] > 0


def test_model_bench_reports_single_cell_and_batch_at_one_thread_and_every_core(
    tiny_model, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)  # as on a Pi 4 or 5
    out = tmp_path / "model.json"
    assert (
        main(["bench", "model", "--model", str(tiny_model[0]), "--calls", "50", "--batch", "8", "--out", str(out)]) == 0
    )
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert [run["threads"] for run in result["runs"]] == [1, 4]
    for run in result["runs"]:
        assert run["model"]["threads"] == run["threads"]
        assert run["single_cell"]["n"] == 50 and run["batch_8"]["per_cell_p50_ms"] > 0
    two_threads = ["bench", "model", "--model", str(tiny_model[0]), "--calls", "5", "--threads", "2", "--out", str(out)]
    assert main(two_threads) == 0
    capsys.readouterr()
    assert [run["threads"] for run in json.loads(out.read_text())["runs"]] == [2]


def test_steal_is_the_share_of_cpu_time_taken_by_other_guests() -> None:
    before = [100, 0, 50, 800, 0, 0, 0, 50, 0, 0]
    after = [200, 0, 100, 1600, 0, 0, 0, 100, 0, 0]  # +1000 jiffies in all, 50 of them stolen
    assert steal_percent(before, after) == 5.0
    assert steal_percent([], after) is None


def test_live_bench_runs_the_loop_unwatched_and_watched_by_a_client(tiny_model, tmp_path: Path, capsys) -> None:
    out = tmp_path / "live.json"
    args = ["bench", "live", "--model", str(tiny_model[0]), "--cells", "5", "--frames", "60", "--rounds", "1"]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["benchmark"] == "live" and result["client_hz"] == 10 and result["machine"]["cpu"]
    assert set(result["runs"]) == {"nobody_watching", "client_at_10_hz"}
    for run in result["runs"].values():
        assert run["end_to_end_p50_ms"] > 0 and run["process_cpu_ms_per_frame"] > 0
    assert set(result["added_by_the_client"]) >= {"end_to_end_p50_ms", "process_cpu_ms_per_frame"}
    assert result["order"] == ["nobody_watching", "client_at_10_hz"]
    (client,) = result["client"]
    assert client["kind"] == "page" and client["frames_sent"] > 0, "the client was served while the loop ran"


def test_the_pipeline_bench_keeps_a_fixed_amount_of_its_own_samples_however_long_it_runs() -> None:
    """The bench kept every frame's timings: a 50,000-frame bench measured its own lists growing."""
    from types import SimpleNamespace

    from edge.commands.bench_samples import RESERVOIR_FRAMES, RSS_SAMPLES, PipelineSamples
    from edge.records import STAGES

    frames = 3 * RESERVOIR_FRAMES
    samples = PipelineSamples(frames, warmup=0, rss_every=10)
    for index in range(frames):
        timings = {stage: float(index % 100) for stage in STAGES}
        samples.observe(SimpleNamespace(timings_ms=timings, detections=[None] * (index % 7), views=index % 3))
    assert samples.sample.rows.shape[0] == RESERVOIR_FRAMES and len(samples.rss) <= RSS_SAMPLES
    latency = samples.latency()
    assert latency["end_to_end"]["n"] == frames and latency["end_to_end"]["max_ms"] == 99.0
    assert 40 <= latency["end_to_end"]["p50_ms"] <= 60, "a uniform sample of 0..99"
    per_frame = samples.per_frame()
    assert per_frame["cells_per_frame"]["max"] == 6 and per_frame["views_per_frame"]["max"] == 2
