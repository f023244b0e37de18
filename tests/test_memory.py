"""Memory is bounded per live cell, never per cell seen: the service loop's traced Python memory
stays flat over a run where every frame brings new cells (the case that grew 135 bytes a cell).

Memory is counted (tracemalloc's traced bytes), not timed; the resident-memory figure over a long
run is the soak's (tests/soak.py, `make soak`) and the bench's."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from edge.capture.synthetic import SyntheticSource
from edge.classify.classifier import Classifier
from edge.config import Config
from edge.notify import Notifier
from edge.records import FrameResult
from edge.service.loop import Service

# The loop's rolling latency windows hold their last 1000 frames: they are full after warm-up.
WARMUP_FRAMES = 1100
MEASURED_FRAMES = 1000
CELLS_PER_FRAME = 8
ALLOWED_GROWTH_BYTES = 256 * 1024  # 32 bytes a new cell over the measured frames; the leak was 135+


def test_traced_memory_is_flat_after_warm_up_while_every_frame_brings_new_cells(tiny_model, tmp_path: Path) -> None:
    classifier = Classifier.load(tiny_model[0], num_threads=1)
    source = SyntheticSource(height=240, width=320, cells=CELLS_PER_FRAME, seed=0, pool=32)
    config = Config(state_dir=str(tmp_path / "state"))
    config = config.with_overrides("snapshots", every_n_frames=0)
    config = config.with_overrides("service", summary_interval_s=86_400.0)
    traced: dict[str, int] = {}
    cells_at: dict[str, int] = {}

    def observe(result: FrameResult) -> None:
        frames = service.counters.frames + 1  # this frame is counted after its observer
        for name, at in (("warm", WARMUP_FRAMES), ("end", WARMUP_FRAMES + MEASURED_FRAMES)):
            if frames == at:
                traced[name] = tracemalloc.get_traced_memory()[0]
                cells_at[name] = service.counters.cells

    service = Service(config, classifier, source, max_frames=WARMUP_FRAMES + MEASURED_FRAMES,
                      notifier=Notifier(address=""), observer=observe)  # fmt: skip
    tracemalloc.start()
    try:
        assert service.run() == 0
    finally:
        tracemalloc.stop()
    new_cells = cells_at["end"] - cells_at["warm"]
    crops = len(list((tmp_path / "state" / "crops").glob("*.png")))
    assert new_cells >= MEASURED_FRAMES * CELLS_PER_FRAME // 2, "every frame brings new cells"
    assert crops > MEASURED_FRAMES, "crops were kept (a per-crop list is one of the things that grew)"
    growth = traced["end"] - traced["warm"]
    assert growth < ALLOWED_GROWTH_BYTES, (
        f"{growth} bytes more after {new_cells} new cells ({growth / new_cells:.0f} B a cell)"
    )
