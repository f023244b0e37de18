"""The service loop in-process: failures, the disk filling, notify, whole mode, snapshots."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import received
from fakes import make_config

from edge.capture import open_source
from edge.capture.base import Frame, SourceError
from edge.capture.synthetic import SyntheticSource
from edge.config import ConfigError
from edge.notify import Notifier
from edge.service.loop import EXIT_OK, EXIT_PIPELINE_FAILED, EXIT_SOURCE_FAILED, Service


def frames_in(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT id, run_id, detections, snapshot FROM frames ORDER BY id").fetchall()


def run_in_thread(service: Service, limit_s: float = 20.0) -> int:
    """Run the service; fail (instead of hanging the suite) if it does not return."""
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(service.run()), daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), "the service did not return: it hung"
    return outcome[0]


def test_runs_for_max_frames_and_stores_every_frame(classifier, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    service = Service(config, classifier, open_source(config), max_frames=5, notifier=Notifier(address=""))
    assert service.run() == EXIT_OK
    rows = frames_in(config.database_path)
    assert len(rows) == 5 and all(cells > 0 for _, _, cells, _ in rows)
    status = json.loads(config.status_path.read_text())
    assert status["state"] == "stopped" and status["counters"]["frames"] == 5
    assert {"detect", "preprocess", "infer", "store", "total"} <= set(status["latency_ms"])


@pytest.mark.parametrize("behaviour", ["raise", "garbage", "hang"])
def test_failing_camera_is_counted_and_ends_the_run_after_n_in_a_row(
    behaviour, classifier, fake_camera, tmp_path: Path, caplog
) -> None:
    fake_camera.behaviour = behaviour
    config = make_config(tmp_path, source={"kind": "picamera2", "width": 320, "height": 240, "max_failures": 3})
    service = Service(config, classifier, open_source(config), notifier=Notifier(address=""))
    assert run_in_thread(service) == EXIT_SOURCE_FAILED
    assert service.counters.source_failures == 3
    assert "3 failed captures in a row" in caplog.text
    with sqlite3.connect(config.database_path) as db:
        reason = db.execute("SELECT exit_reason FROM runs").fetchone()[0]
    assert "source failed 3 times in a row" in reason


def test_the_run_records_the_sensor_mode_and_scaler_crop_the_camera_runs_with(
    classifier, fake_camera, tmp_path: Path, caplog
) -> None:
    """Against the fake camera (tests/hardware checks a real one): the field of view a run saw
    can be told from its row."""
    caplog.set_level(logging.INFO, logger="metascope")
    fake_camera.cameras = [{"Model": "imx708", "Num": 0}]
    config = make_config(tmp_path, source={"kind": "picamera2", "width": 320, "height": 240})
    service = Service(config, classifier, open_source(config), max_frames=2, notifier=Notifier(address=""))
    assert service.run() == EXIT_OK
    with sqlite3.connect(config.database_path) as db:
        source, run_config = db.execute("SELECT source, config FROM runs").fetchone()
    applied = json.loads(run_config)["camera_applied"]
    assert applied["model"] == "imx708" and applied["colour_space"] == "sYCC"
    assert applied["sensor_mode"] == {"output_size": [2304, 1296], "bit_depth": 10}
    assert applied["scaler_crop"] == [0, 0, 4608, 2592]
    assert "imx708 sensor mode 2304x1296 10-bit, ScalerCrop [0, 0, 4608, 2592]" in source
    assert "sensor mode 2304x1296 10-bit" in caplog.text  # the start line in the journal


class FlakySource:
    """Frames from a synthetic source, with the listed captures failing."""

    description = "flaky"

    def __init__(self, failures: set[int]):
        self.inner = SyntheticSource(cells=4, pool=2)
        self.failures = failures
        self.calls = 0

    def open(self) -> None:
        self.inner.open()

    def next_frame(self, timeout_s, should_stop=None) -> Frame:
        self.calls += 1
        if self.calls in self.failures:
            raise SourceError(f"capture {self.calls} failed")
        return self.inner.next_frame(timeout_s, should_stop)

    def close(self) -> None:
        self.inner.close()


def test_failures_that_are_not_in_a_row_never_stop_it(classifier, tmp_path: Path) -> None:
    config = make_config(tmp_path)  # max_failures 3
    source = FlakySource({2, 3, 5, 6, 8, 9})
    service = Service(config, classifier, source, max_frames=6, notifier=Notifier(address=""))
    assert service.run() == EXIT_OK
    assert service.counters.source_failures == 6 and service.counters.frames == 6


def test_a_long_run_of_failed_captures_is_not_a_warning_per_capture(classifier, tmp_path: Path, caplog) -> None:
    """With a generous source.max_failures, a stalled camera must not flood the journal."""
    config = make_config(tmp_path, source={"max_failures": 1000})
    source = FlakySource(set(range(1, 61)))  # 60 failed captures in a row, then frames again
    service = Service(config, classifier, source, max_frames=3, notifier=Notifier(address=""))
    assert service.run() == EXIT_OK
    assert service.counters.source_failures == 60
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.getMessage().startswith("source:")]
    assert 1 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    assert "more since the last such warning" in caplog.text or len(warnings) == 1


def test_one_bad_frame_is_skipped_and_counted(classifier, tmp_path: Path, monkeypatch) -> None:
    config = make_config(tmp_path)
    service = Service(config, classifier, open_source(config), max_frames=4, notifier=Notifier(address=""))
    real = service.pipeline.process
    calls = iter(range(100))

    def sometimes_broken(frame):
        if next(calls) == 1:
            raise ValueError("corrupt frame")
        return real(frame)

    monkeypatch.setattr(service.pipeline, "process", sometimes_broken)
    assert service.run() == EXIT_OK
    assert service.counters.bad_frames == 1 and service.counters.frames == 4
    assert len(frames_in(config.database_path)) == 4


def test_frames_that_keep_failing_end_the_run(classifier, tmp_path: Path, monkeypatch) -> None:
    config = make_config(tmp_path)
    service = Service(config, classifier, open_source(config), notifier=Notifier(address=""))

    def broken(frame):
        raise RuntimeError("interpreter fault")

    monkeypatch.setattr(service.pipeline, "process", broken)
    assert service.run() == EXIT_PIPELINE_FAILED
    assert service.counters.bad_frames == 3


@pytest.fixture
def disk_looked_at_every_frame(monkeypatch) -> None:
    import edge.service.policies

    monkeypatch.setattr(edge.service.policies, "DISK_CHECK_INTERVAL_S", 0.0)


def twenty_frames_on_a_disk(config, classifier, free: dict[str, int], observe) -> Service:
    """A service of 20 frames whose free disk space is ``free["bytes"]``, which ``observe``
    (called after each frame is recorded) may change."""
    return Service(
        config,
        classifier,
        open_source(config),
        max_frames=20,
        notifier=Notifier(address=""),
        free_space=lambda path: free["bytes"],
        observer=observe,
    )


def test_disk_filling_stops_snapshots_first_then_results_and_never_the_classification(
    classifier, tmp_path: Path, caplog, disk_looked_at_every_frame
) -> None:
    mb = 1024 * 1024
    free = {"bytes": 5000 * mb}
    config = make_config(
        tmp_path,
        snapshots={"every_n_frames": 1, "min_free_mb": 1000.0},
        store={"min_free_mb": 100.0},
    )
    frame_count = {"n": 0}

    def observe(result) -> None:
        frame_count["n"] += 1
        # 5 frames with room for everything, 5 too low for snapshots, 5 too low for results, 5 with room again
        free["bytes"] = {5: 500 * mb, 10: 50 * mb, 15: 5000 * mb}.get(frame_count["n"], free["bytes"])

    service = twenty_frames_on_a_disk(config, classifier, free, observe)
    assert service.run() == EXIT_OK
    counters = service.counters
    assert counters.frames == 20, "classification went on throughout"
    assert counters.unsaved_frames == 5
    rows = frames_in(config.database_path)
    assert len(rows) == 15
    snapshots = [row[3] for row in rows]
    assert all(snapshots[:5]) and not any(snapshots[5:10]) and all(snapshots[10:])
    assert counters.snapshots_skipped == 5
    assert len(list(config.snapshot_dir.glob("*.jpg"))) == 10
    assert "results are not being written" in caplog.text


def test_snapshots_respect_their_size_cap(classifier, tmp_path: Path) -> None:
    config = make_config(tmp_path, snapshots={"every_n_frames": 1, "max_mb": 0.05, "min_free_mb": 0.0})
    service = Service(config, classifier, open_source(config), max_frames=12, notifier=Notifier(address=""))
    assert service.run() == EXIT_OK
    files = list(config.snapshot_dir.glob("*.jpg"))
    assert 0 < len(files) < 12
    assert sum(f.stat().st_size for f in files) <= 0.05 * 1024 * 1024
    from PIL import Image

    with Image.open(files[0]) as image:
        assert image.mode == "RGB" and image.size == (640, 480)


def test_notify_protocol_ready_watchdog_stopping_in_order(classifier, tmp_path: Path, notify_socket) -> None:
    listener, address = notify_socket
    config = make_config(tmp_path)
    notifier = Notifier(address=address, watchdog_usec="30000000")  # the unit's WatchdogSec=30
    service = Service(config, classifier, open_source(config), max_frames=3, notifier=notifier)
    assert service.run() == EXIT_OK
    kinds = [m.splitlines()[0] for m in received(listener)]
    assert kinds[0] == "READY=1"
    assert kinds[-1] == "STOPPING=1"
    assert kinds == ["READY=1", "WATCHDOG=1", "STOPPING=1"]  # 3 quick turns: one ping a second


def test_notify_abstract_socket_and_a_watchdog_ping_every_second_whatever_the_period() -> None:
    name = f"metascope-test-{threading.get_ident()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(2)
    notifier = Notifier(address="@" + name, watchdog_usec="30000000")  # WatchdogSec=30
    assert notifier.watchdog_period_s == 30.0
    assert notifier.watchdog(now=100.0)
    assert not notifier.watchdog(now=100.5)  # a fast loop does not flood the socket...
    assert notifier.watchdog(now=101.1)  # ...but a ping is never held back for half the period
    assert listener.recv(100) == b"WATCHDOG=1"
    listener.close()
    assert Notifier(address="").ready() is False  # outside systemd: nothing, no error


class CountingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(address="", watchdog_usec="30000000")
        self.watchdog_calls = 0

    def watchdog(self, now: float | None = None) -> bool:
        self.watchdog_calls += 1
        return super().watchdog(now)


def test_the_watchdog_is_pinged_every_turn_even_when_no_frame_comes(classifier, tmp_path: Path) -> None:
    """A stalled camera's turns ping too: a ping only after a processed frame would let a long
    run of timeouts reach WatchdogSec and SIGABRT."""
    config = make_config(tmp_path, source={"max_failures": 100})
    notifier = CountingNotifier()
    source = FlakySource(set(range(1, 6)))  # five failed captures, then frames
    service = Service(config, classifier, source, max_frames=2, notifier=notifier)
    assert service.run() == EXIT_OK
    assert notifier.watchdog_calls == 7  # 5 failed turns + 2 frames


def test_a_capture_timeout_the_watchdog_cannot_wait_out_is_refused_at_start(classifier, tmp_path: Path) -> None:
    config = make_config(tmp_path, source={"timeout_s": 20.0})
    notifier = Notifier(address="", watchdog_usec="30000000")
    service = Service(config, classifier, open_source(config), max_frames=1, notifier=notifier)
    with pytest.raises(ConfigError, match=r"source\.timeout_s: 20 s .* more than half the unit's WatchdogSec \(30 s\)"):
        service.run()
    config = make_config(tmp_path, source={"timeout_s": 14.0})
    assert Service(config, classifier, open_source(config), max_frames=1, notifier=notifier).run() == EXIT_OK


def test_whole_mode_classifies_the_central_window_as_one_cell(classifier, tmp_path: Path) -> None:
    config = make_config(tmp_path, pipeline={"mode": "whole"})
    service = Service(config, classifier, open_source(config), max_frames=2, notifier=Notifier(address=""))
    assert service.run() == EXIT_OK
    with sqlite3.connect(config.database_path) as db:
        boxes = db.execute("SELECT bbox_x0, bbox_y0, bbox_x1, bbox_y1 FROM views").fetchall()
    window = classifier.input_spec.window_px
    assert boxes == [((640 - window) // 2, (480 - window) // 2, (640 + window) // 2, (480 + window) // 2)] * 2


def test_rig_pixel_size_rescales_the_window(classifier, tmp_path: Path) -> None:
    from dataclasses import replace

    from edge.service.pipeline import Pipeline

    spec = replace(classifier.input_spec, pixel_size_um=0.5)
    classifier.card = replace(classifier.card, input=spec)
    try:
        config = make_config(tmp_path, pipeline={"pixel_size_um": 1.0})
        assert Pipeline(classifier, config).window_px == spec.window_px // 2
    finally:
        classifier.card = replace(classifier.card, input=replace(spec, pixel_size_um=None))


def test_the_default_budget_follows_the_model(classifier, tmp_path: Path) -> None:
    """budget_ms = 0 (the default): 20 cells at the card's Pi 4 estimate plus the frame's own
    work, at least 100 ms; a configured budget wins."""
    from dataclasses import replace

    from edge.service.pipeline import Pipeline

    original = classifier.card
    try:
        for estimate, expected in ((9.0, 230.0), (1.5, 100.0), (None, 100.0)):
            speed = {} if estimate is None else {"speed": {"pi4_estimate_ms_per_cell": estimate}}
            classifier.card = replace(original, extra={**original.extra, **speed})
            service = Service(make_config(tmp_path), classifier, open_source(make_config(tmp_path)), max_frames=1,
                              notifier=Notifier(address=""))  # fmt: skip
            assert service.pipeline.budget_ms == expected, estimate
        assert Pipeline(classifier, make_config(tmp_path, pipeline={"budget_ms": 40.0})).budget_ms == 40.0
        assert service.run() == EXIT_OK
        assert json.loads(service.config.status_path.read_text())["budget_ms"] == 100.0
    finally:
        classifier.card = original


def test_pipeline_results_use_the_shared_preprocessing(classifier, tmp_path: Path) -> None:
    from edge.classify.preprocess import model_input
    from edge.service.pipeline import Pipeline

    config = make_config(tmp_path)
    source = open_source(config)
    source.open()
    frame = source.next_frame(1.0)
    pipeline = Pipeline(classifier, config)
    result = pipeline.process(frame)
    from edge.cells.detect import detect

    detections = detect(frame.pixels, pipeline.settings)
    expected = classifier.predict(
        np.stack(
            [model_input(frame.pixels, d.centroid_yx, classifier.input_spec, d.mask, d.origin_yx) for d in detections]
        )
    )
    np.testing.assert_allclose([c.probability for c in result.detections], expected, atol=1e-6)


class CommitsFailWhenFull:
    """The store's SQLite connection, whose COMMIT fails as on a full disk while ``full`` is set:
    with write-ahead logging the batch's pages reach the disk at COMMIT, so that is where a full
    disk is found (the soak's full tmpfs did it); every other statement runs as it is."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection, self.full = connection, False

    def execute(self, sql: str, *parameters):
        if self.full and sql.strip().upper() == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(sql, *parameters)

    def __getattr__(self, name: str):
        return getattr(self.connection, name)


@pytest.mark.parametrize("found_by", ["the disk check", "the run's last commit"])
def test_every_frame_is_stored_or_counted_unsaved_when_a_full_disk_fails_a_commit(
    classifier, tmp_path: Path, found_by: str, disk_looked_at_every_frame
) -> None:
    """A batch lost to a failed COMMIT is counted in unsaved_frames, frame by frame: the counters
    (status.json, the summary) account for every classified frame. The soak's full disk left 7
    classified frames neither stored nor counted."""
    mb = 1024 * 1024
    free = {"bytes": 5000 * mb}
    config = make_config(tmp_path, store={"min_free_mb": 100.0, "commit_interval_s": 60.0})  # one batch
    seen = {"frames": 0}
    service = twenty_frames_on_a_disk(config, classifier, free, lambda result: observe())

    def observe() -> None:
        seen["frames"] += 1
        store = service.recorder.store
        if seen["frames"] == 1:
            store._db = CommitsFailWhenFull(store._db)
        if found_by == "the disk check":  # frames 10-14 on a full disk, the service sees it
            store._db.full = 10 <= seen["frames"] < 15
            free["bytes"] = 50 * mb if store._db.full else 5000 * mb
        else:  # full from frame 10 on, unseen by the free-space check (a quota, a size limit)
            store._db.full = seen["frames"] >= 10

    assert service.run() == EXIT_OK
    counters = service.counters
    stored = len(frames_in(config.database_path))
    assert counters.frames == 20
    assert stored < 20, "the full disk cost frames"
    assert counters.frames == stored + counters.unsaved_frames, "frames neither stored nor counted unsaved"
