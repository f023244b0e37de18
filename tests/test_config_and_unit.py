"""The service config (every bad key/value named, exit 2) and the systemd unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

from edge.cli import main
from edge.config import SECTIONS, Config, config_from_dict, load_config

EXAMPLE = REPO / "systemd" / "metascope.example.toml"
UNIT = REPO / "systemd" / "metascope.service"


def test_example_config_is_valid_and_spells_out_every_default() -> None:
    example = load_config(EXAMPLE)
    defaults = Config()
    for section in SECTIONS:
        assert getattr(example, section) == getattr(defaults, section), f"[{section}] differs from the defaults"
    assert example.state_dir == "/var/lib/metascope"
    written = tomllib.loads(EXAMPLE.read_text())
    for section, values in Config().as_dict().items():
        if isinstance(values, dict):
            assert set(written[section]) == set(values), f"[{section}] in the example lists every key"


def test_no_file_means_defaults_and_state_dir_follows_systemd(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert Config().state_dir == str(tmp_path)
    assert config_from_dict({}).source.kind == "picamera2"


BAD = [
    # nan compares false with every bound: it must be refused by name, not pass them all.
    ({"store": {"min_free_mb": float("nan")}}, "store.min_free_mb: must be a finite number, got nan"),
    ({"pipeline": {"budget_ms": float("inf")}}, "pipeline.budget_ms: must be a finite number, got inf"),
    ({"camera": {"colour_gains": [float("nan"), 1.0]}}, "camera.colour_gains: must be a finite number, got nan"),
    # A 0.1 fps camera takes 10 s per frame: a 2 s capture timeout would stop every start.
    (
        {"camera": {"frame_rate": 0.1}, "source": {"timeout_s": 2.0}},
        "source.timeout_s: 2 s is shorter than two frames at camera.frame_rate 0.1",
    ),
    ({"nonsense": 1}, "nonsense: unknown key"),
    ({"detect": {"min_area": 10}}, "detect.min_area: unknown key"),
    ({"source": {"kind": "usb"}}, "source.kind: must be one of"),
    ({"source": {"width": "640"}}, "source.width: must be a whole number"),
    ({"source": {"width": 8}}, "source.width: must be at least 32"),
    ({"source": {"timeout_s": 0}}, "source.timeout_s: must be at least 0.05"),
    ({"source": {"replay_loop": "yes"}}, "source.replay_loop: must be true or false"),
    ({"camera": {"colour_gains": [1.0]}}, "camera.colour_gains: must be a list of 2 numbers"),
    ({"camera": {"exposure_us": 0}}, "camera.exposure_us: must be at least 1"),
    # What picamera2 refuses (odd sizes) or libcamera silently changes (AWB back on, a clamped
    # exposure) stops at start instead, named.
    ({"source": {"width": 641}}, "source.width: the camera's YUV420 stream needs an even number, got 641"),
    ({"source": {"height": 481}}, "source.height: the camera's YUV420 stream needs an even number, got 481"),
    ({"camera": {"colour_gains": [0, 1.5]}}, "camera.colour_gains: 0 turns automatic white balance back on"),
    (
        {"camera": {"frame_rate": 30.0, "exposure_us": 40_000}},
        "camera.exposure_us: 40000 us is longer than a frame at camera.frame_rate 30 (33333 us)",
    ),
    ({"camera": {"lens_position": -0.5}}, "camera.lens_position: dioptres must be 0 or more"),
    ({"camera": {"lens_position": 40.0}}, "camera.lens_position: must be at most 32"),
    ({"model": {"threshold": 1.5}}, "model.threshold: must be at most 1"),
    ({"model": {"threshold": 1.0}}, "model.threshold: must be between 0 and 1"),
    ({"pipeline": {"mode": "all"}}, "pipeline.mode: must be one of"),
    ({"pipeline": {"budget_ms": -5}}, "pipeline.budget_ms: must be at least 0"),
    ({"detect": {"min_area_px": 500, "max_area_px": 100}}, "detect.min_area_px: 500 is larger than"),
    ({"detect": {"downscale": 3.5}}, "detect.downscale: must be a whole number"),
    ({"store": {"retention_days": True}}, "store.retention_days: must be a number"),
    ({"snapshots": {"quality": 100}}, "snapshots.quality: must be at most 95"),
    ({"service": "fast"}, "[service]: must be a table"),
    ({"tracking": {"views_per_cell": 0}}, "tracking.views_per_cell: must be at least 1"),
    ({"tracking": {"max_match_px": float("nan")}}, "tracking.max_match_px: must be a finite number, got nan"),
    ({"tracking": {"new_field_fraction": 1.5}}, "tracking.new_field_fraction: must be at most 1"),
    ({"tracking": {"lost_after_frames": 2.5}}, "tracking.lost_after_frames: must be a whole number"),
    ({"source": {"still_move_every": -1}}, "source.still_move_every: must be at least 0"),
    ({"state_dir": ""}, "state_dir: must be a non-empty path"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_each_bad_key_or_value_is_named_and_exits_2(data, message, tmp_path: Path, capsys) -> None:
    from fakes import toml_text

    path = tmp_path / "bad.toml"
    path.write_text(toml_text(data))
    assert main(["run", "--config", str(path), "--max-frames", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_a_state_directory_that_cannot_be_made_exits_5_so_systemd_retries(tiny_model, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state directory should be")
    args = ["run", "--source", "synthetic", "--max-frames", "1", "--model", str(tiny_model[0])]
    assert main([*args, "--state-dir", str(blocker / "state")]) == 5
    assert f"state directory {blocker / 'state'}" in capsys.readouterr().err


def test_unreadable_config_files_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "broken.toml").write_text("[source\nkind = 1")
    assert main(["run", "--config", str(tmp_path / "broken.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["status", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_bad_source_argument_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["run", "--state-dir", str(tmp_path), "--source", "webcam"]) == 2
    assert "--source: unknown source 'webcam'" in capsys.readouterr().err


def test_doctor_reports_each_check(tiny_model, tmp_path: Path, capsys) -> None:
    config = tmp_path / "m.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[source]\nkind = "synthetic"\n')
    assert main(["doctor", "--config", str(config), "--model", str(tiny_model[0])]) == 0
    out = capsys.readouterr().out
    for name in ("python", "config", "numpy", "interpreter", "model", "state_dir", "free space"):
        assert f"PASS  {name}:" in out
    assert "SKIP  camera:" in out
    assert main(["doctor", "--config", str(config), "--model", str(tmp_path / "none.tflite")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  model:" in out and "fix:" in out


# ------------------------------------------------------------------- the unit
def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_has_what_the_service_relies_on() -> None:
    settings = unit_settings()
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "User": "metascope",
        "SupplementaryGroups": "video",
        "StateDirectory": "metascope",
        "ConfigurationDirectory": "metascope",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ExecStart": "/opt/metascope/venv/bin/metascope run",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert "PrivateDevices" not in settings, "libcamera needs /dev/video*, /dev/media*, /dev/dma_heap"
    assert "ProtectClock" not in settings and "ProcSubset" not in settings, "they would block the camera or XNNPACK"
    assert settings["DevicePolicy"] == ["closed"]
    assert set(settings["DeviceAllow"]) == {"char-video4linux rw", "char-media rw", "char-dma_heap rw"}
    assert settings["PrivateNetwork"] == ["yes"] and settings["UMask"] == ["0027"]
    assert int(settings["WatchdogSec"][0]) > 0 and "StartLimitBurst" in settings


def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    """systemd-analyze security --offline=yes scores the unit (7.6 EXPOSED before hardening)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    copy = tmp_path / "metascope.service"
    copy.write_text(UNIT.read_text().replace("/opt/metascope/venv/bin/metascope", "/bin/true"))
    result = subprocess.run([analyze, "security", "--offline=yes", str(copy)], capture_output=True, text=True)
    score = re.search(r"Overall exposure level for metascope.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0, result.stdout


def test_unit_restarts_what_the_exit_code_table_says() -> None:
    """A usage error (bad config, model) and a refused database are never retried; camera,
    frames, state directory are."""
    from edge.errors import ExitCode

    not_retried = {ExitCode.USAGE, ExitCode.DATABASE_REFUSED}
    prevented = {int(code) for value in unit_settings()["RestartPreventExitStatus"] for code in value.split()}
    assert prevented == not_retried
    table = (REPO / "README.md").read_text()
    for code in ExitCode:
        row = next(line for line in table.splitlines() if line.startswith(f"| {int(code)} |"))
        assert ("not restarted" in row) == (code in not_retried), row


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify needs ExecStart to exist: verify a copy whose ExecStart points at a
    stand-in executable in a temp folder (the only line changed)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    stand_in = tmp_path / "metascope"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    copy = tmp_path / "metascope.service"
    copy.write_text(UNIT.read_text().replace("/opt/metascope/venv/bin/metascope", str(stand_in)))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # A container without a running systemd cannot resolve the user or talk to the manager;
        # those lines are about the machine, not the unit.
        if line.strip() and "metascope.service" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_readme_documents_every_config_key() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The service") :]
    for name, values in Config().as_dict().items():
        if isinstance(values, dict):
            for key in values:
                assert f"`{name}.{key}`" in section, f"{name}.{key} is not documented in README's service section"


def test_no_edge_module_imports_tensorflow_or_train() -> None:
    import sys

    script = (
        "import sys, pkgutil, importlib, edge\n"
        "names = [m.name for m in pkgutil.walk_packages(edge.__path__, 'edge.') if m.name != 'edge.__main__']\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "assert 'edge.service.loop' in names and 'edge.capture.picamera' in names\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'train', 'picamera2', 'keras')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)
