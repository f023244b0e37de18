"""deploy/install.sh: the exact steps of a first install and of an upgrade (--dry-run), and a
real run into a scratch root (METASCOPE_ROOT) where only apt, the user tools, systemctl and
pip are stand-ins: those belong to a Pi, the file handling is what is tested."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from pi_standins import libcamera_installed, stub_commands, systemd_unit, venv_installed

APT = ["python3-picamera2", "libcamera-ipa", "python3-venv", "python3-numpy", "python3-pil", "python3-scipy", "rsync"]
DROP_IN = "etc/systemd/system/metascope.service.d/model.conf"


def install(
    root: Path | None, stubs: Path, *args: str, project: Path = REPO, sudo_user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """install.sh with the stand-ins first on PATH, into the scratch ``root`` (None: the real /, as on a Pi)."""
    env = {key: value for key, value in os.environ.items() if key not in ("SUDO_USER", "METASCOPE_ROOT")}
    env["PATH"] = f"{stubs}:{os.environ['PATH']}"
    if root is not None:
        env["METASCOPE_ROOT"] = str(root)
    if sudo_user:
        env["SUDO_USER"] = sudo_user
    script = project / "deploy" / "install.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """What install.sh reads of the project, copied: a real run cleans the project's build/,
    which must not be this checkout's."""
    copy = tmp_path / "project"
    for folder in ("deploy", "systemd"):
        shutil.copytree(REPO / folder, copy / folder)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, copy / name)
    (copy / "build" / "lib" / "edge").mkdir(parents=True)
    (copy / "build" / "lib" / "edge" / "removed.py").write_text("# built before it was deleted\n")
    return copy


def steps(output: str) -> list[list[str]]:
    """The commands install.sh printed (`  + cmd args`), as argument lists."""
    return [shlex.split(line[4:]) for line in output.splitlines() if line.startswith("  + ")]


def transcript(root: Path, model: Path, *, upgrade: bool, start: bool = True) -> list[list[str]]:
    """The steps a dry run of install.sh with --model MODEL prints: a first install (no user,
    venv or config yet) or an upgrade (all three there: the user's config is kept, the new one
    lands beside it); a model not named like the default gets a drop-in naming it, the default
    one removes it; --no-start (start False) leaves the restart out."""
    r, src, models = str(root), str(REPO), f"{root}/opt/metascope/models"
    add_user = [
        "useradd", "--system", "--user-group", "--groups", "video", "--home-dir", "/var/lib/metascope",
        "--no-create-home", "--shell", "/usr/sbin/nologin", "metascope",
    ]  # fmt: skip
    if model.stem == "mda231-pc3":
        drop_in = [["rm", "-f", f"{r}/{DROP_IN}"]]
    else:
        drop_in = [["mkdir", "-p", f"{r}/etc/systemd/system/metascope.service.d"], ["write", f"{r}/{DROP_IN}"]]
    pip = [f"{r}/opt/metascope/venv/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    config = "metascope.toml.new" if upgrade else "metascope.toml"
    restart = [
        ["systemctl", "reset-failed", "metascope.service"],
        ["systemctl", "restart", "--no-block", "metascope.service"],
    ]
    return [
        ["apt-get", "update", "-q"],
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--no-install-recommends", *APT],
        ["usermod", "--append", "--groups", "video", "metascope"] if upgrade else add_user,
        ["install", "-d", "-m", "0755", f"{r}/opt/metascope", models, f"{r}/etc/metascope"],
        ["mkdir", "-p", f"{r}/etc/systemd/system", f"{r}/usr/local/bin"],
        *([] if upgrade else [["python3", "-m", "venv", "--system-site-packages", f"{r}/opt/metascope/venv"]]),
        ["rm", "-rf", f"{src}/build"],
        [*pip, "--constraint", f"{src}/deploy/constraints-pi.txt", f"{src}[edge]"],
        ["ln", "-sfn", "/opt/metascope/venv/bin/metascope", f"{r}/usr/local/bin/metascope"],
        ["install", "-m", "0644", f"{src}/README.md", f"{r}/opt/metascope/README.md"],
        ["install", "-m", "0644", str(model), f"{models}/{model.name}"],
        ["install", "-m", "0644", str(model.with_suffix(".json")), f"{models}/{model.stem}.json"],
        *drop_in,
        ["install", "-m", "0644", f"{src}/systemd/metascope.example.toml", f"{r}/etc/metascope/{config}"],
        ["install", "-m", "0644", f"{src}/systemd/metascope.service", f"{r}/etc/systemd/system/metascope.service"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "metascope.service"],
        *(restart if start else []),
    ]


@pytest.fixture
def model(model_copy: Path) -> Path:
    return model_copy  # tiny.tflite + tiny.json: not the default model's name


@pytest.fixture
def default_named_model(model_copy: Path) -> Path:
    target = model_copy.with_name("mda231-pc3.tflite")
    model_copy.rename(target)
    model_copy.with_suffix(".json").rename(target.with_suffix(".json"))
    return target


def test_dry_run_of_a_first_install(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "root"
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="exit 2")
    result = install(root, stubs, "--dry-run", "--model", str(model))
    assert result.returncode == 0, result.stderr
    assert steps(result.stdout) == transcript(root, model, upgrade=False)
    assert "Environment=METASCOPE_MODEL=/opt/metascope/models/tiny.tflite" in result.stdout
    assert "journalctl -u metascope -f" in result.stdout
    assert not root.exists(), "a dry run changes nothing"
    assert (tmp_path / "log").read_text().split("\n")[0].startswith("getent passwd metascope")
    assert "apt-get" not in (tmp_path / "log").read_text(), "a dry run runs nothing"


def test_dry_run_of_an_upgrade_keeps_the_users_config(tmp_path: Path, default_named_model: Path) -> None:
    root = tmp_path / "root"
    (root / "opt/metascope/venv/bin").mkdir(parents=True)
    (root / "opt/metascope/venv/bin/python").write_text("")
    (root / "opt/metascope/venv/bin/python").chmod(0o755)
    (root / "etc/metascope").mkdir(parents=True)
    (root / "etc/metascope/metascope.toml").write_text('state_dir = "/data/metascope"\n')
    (root / DROP_IN).parent.mkdir(parents=True)
    (root / DROP_IN).write_text("[Service]\nEnvironment=METASCOPE_MODEL=/opt/metascope/models/old.tflite\n")
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="echo metascope:x:999:999::/:/bin/false")
    result = install(root, stubs, "--dry-run", "--no-start", "--model", str(default_named_model))
    assert result.returncode == 0, result.stderr
    assert "(exists: reused)" in result.stdout
    assert steps(result.stdout) == transcript(root, default_named_model, upgrade=True, start=False)


def test_install_into_a_scratch_root_then_upgrade(tmp_path: Path, model: Path, project: Path) -> None:
    root, log = tmp_path / "root", tmp_path / "log"
    venv_installed(root, log)
    libcamera_installed(root)
    stubs = stub_commands(tmp_path / "bin", log, getent="exit 2")

    first = install(root, stubs, "--model", str(model), project=project)
    assert first.returncode == 0, first.stderr
    installed = root / "opt/metascope/models/tiny.tflite"
    assert installed.read_bytes() == model.read_bytes()
    assert installed.with_suffix(".json").read_text() == model.with_suffix(".json").read_text()
    config = root / "etc/metascope/metascope.toml"
    assert config.read_text() == (REPO / "systemd/metascope.example.toml").read_text()
    unit = root / "etc/systemd/system/metascope.service"
    assert unit.read_text() == (REPO / "systemd/metascope.service").read_text()
    assert "METASCOPE_MODEL=/opt/metascope/models/tiny.tflite" in (root / DROP_IN).read_text()
    assert os.readlink(root / "usr/local/bin/metascope") == "/opt/metascope/venv/bin/metascope"
    calls = log.read_text().splitlines()
    assert calls[1].startswith("apt-get install -y -q --no-install-recommends python3-picamera2")
    assert any(call.startswith("useradd --system") for call in calls)
    assert f"--constraint {project}/deploy/constraints-pi.txt {project}[edge]" in log.read_text()
    assert not (project / "build").exists(), "a stale build/ would put deleted modules into the wheel"
    assert calls[-7:] == [
        "systemctl daemon-reload",
        "systemctl enable metascope.service",
        "systemctl reset-failed metascope.service",
        "systemctl restart --no-block metascope.service",
        "systemctl list-jobs --no-legend metascope.service",
        "systemctl is-active metascope.service",
        "systemctl show --property=StatusText --value metascope.service",
    ]

    unchanged = install(root, stubs, "--model", str(model), project=project)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "(unchanged default: kept)" in unchanged.stdout
    assert not config.with_name("metascope.toml.new").exists()

    config.write_text('state_dir = "/data/metascope"  # the user\'s own\n')
    again = install(root, stubs, "--model", str(model), project=project)
    assert again.returncode == 0, again.stderr
    assert config.read_text() == 'state_dir = "/data/metascope"  # the user\'s own\n'
    assert config.with_name("metascope.toml.new").read_text() == (REPO / "systemd/metascope.example.toml").read_text()


def test_a_service_that_does_not_start_fails_the_install(tmp_path: Path, model: Path, project: Path) -> None:
    root = tmp_path / "root"
    venv_installed(root, tmp_path / "log")
    libcamera_installed(root)
    failing = 'case "$1" in restart) exit 1 ;; esac'
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="exit 2", systemctl=failing)
    result = install(root, stubs, "--model", str(model), project=project)
    assert result.returncode == 1
    assert "the service did not start; see: journalctl -u metascope" in result.stderr


def test_bad_models_are_refused_before_anything_changes(tmp_path: Path, model: Path) -> None:
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log")
    root = tmp_path / "root"
    cases = {
        "--model needs a path": ["--model"],
        "expected a .tflite file": ["--model", str(model.with_suffix(".json"))],
        "no such file": ["--model", str(tmp_path / "missing.tflite")],
        "unknown argument --fast": ["--fast"],
    }
    lone = tmp_path / "lone.tflite"
    lone.write_bytes(model.read_bytes())
    cases["has no model card beside it"] = ["--model", str(lone)]
    tampered = tmp_path / "tampered.tflite"
    tampered.write_bytes(model.read_bytes() + b"\0")
    tampered.with_suffix(".json").write_text(model.with_suffix(".json").read_text())
    cases["does not match its card"] = ["--model", str(tampered)]
    for message, args in cases.items():
        result = install(root, stubs, *args)
        assert result.returncode == 1, message
        assert message in result.stderr, (message, result.stderr)
    assert not root.exists()
    assert not (tmp_path / "log").exists(), "nothing was run"


def test_the_installing_user_joins_the_metascope_group_to_read_results(tmp_path: Path, model: Path) -> None:
    """The unit's UMask=0027 keeps results from others; whoever ran sudo may read them."""
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="exit 2")
    result = install(tmp_path / "root", stubs, "--dry-run", "--model", str(model), sudo_user="labuser")
    assert result.returncode == 0, result.stderr
    assert ["usermod", "--append", "--groups", "metascope", "labuser"] in steps(result.stdout)
    as_root = install(tmp_path / "root", stubs, "--dry-run", "--model", str(model), sudo_user="root")
    assert not [step for step in steps(as_root.stdout) if step[:1] == ["usermod"]]


def test_a_model_name_that_could_inject_into_the_unit_is_refused(tmp_path: Path, model: Path) -> None:
    """The name goes into a systemd drop-in: a space would break the service, a newline would
    add any directive (ExecStartPre=+... runs as root)."""
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log")
    root = tmp_path / "root"
    for name in ("my model.tflite", "x\nExecStartPre=+touch pwned\n.tflite", "a%i.tflite", "$HOME.tflite"):
        hostile = tmp_path / "models" / name
        hostile.parent.mkdir(exist_ok=True)
        hostile.write_bytes(model.read_bytes())
        hostile.with_suffix(".json").write_text(model.with_suffix(".json").read_text())
        result = install(root, stubs, "--dry-run", "--model", str(hostile))
        assert result.returncode == 1, name
        assert "model file name" in result.stderr and "letters, digits" in result.stderr, result.stderr
    assert not root.exists()


def test_without_model_both_shipped_models_are_installed(tmp_path: Path, project: Path, model_copy: Path) -> None:
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="exit 2")
    root = tmp_path / "root"
    missing = install(root, stubs, "--dry-run", project=project)
    assert missing.returncode == 1
    assert f"no default model at {project}/models/mda231-pc3.tflite: pass --model PATH" in missing.stderr

    (project / "models").mkdir()
    shutil.copy2(model_copy, project / "models" / "mda231-pc3.tflite")
    shutil.copy2(model_copy.with_suffix(".json"), project / "models" / "mda231-pc3.json")
    no_fast = install(root, stubs, "--dry-run", project=project)
    assert no_fast.returncode == 1
    assert f"no fast model at {project}/models/mda231-pc3-fast.tflite" in no_fast.stderr

    shutil.copy2(model_copy, project / "models" / "mda231-pc3-fast.tflite")
    shutil.copy2(model_copy.with_suffix(".json"), project / "models" / "mda231-pc3-fast.json")
    shipped = install(root, stubs, "--dry-run", project=project)
    assert shipped.returncode == 0, shipped.stderr
    commands = steps(shipped.stdout)
    for name in ("mda231-pc3", "mda231-pc3-fast"):
        for suffix in (".tflite", ".json"):
            source, target = f"{project}/models/{name}{suffix}", f"{root}/opt/metascope/models/{name}{suffix}"
            assert ["install", "-m", "0644", source, target] in commands
    assert not [command for command in commands if command[0] == "write"], "the default model needs no drop-in"

    (project / "models" / "mda231-pc3-fast.tflite").write_bytes(b"tampered")
    tampered = install(root, stubs, "--dry-run", project=project)
    assert tampered.returncode == 1 and "mda231-pc3-fast.tflite does not match its card" in tampered.stderr


@pytest.mark.parametrize("arch", ["armhf", "amd64"])
def test_a_system_that_is_not_64_bit_raspberry_pi_os_is_refused_first(tmp_path: Path, model: Path, arch) -> None:
    """32-bit Raspberry Pi OS has no interpreter wheels: pip would fail halfway through. A real
    install stops before anything (the root check included); a dry run only says so."""
    log = tmp_path / "log"
    stubs = stub_commands(tmp_path / "bin", log, dpkg=f"echo {arch}")
    refused = install(None, stubs, "--model", str(model))
    assert refused.returncode == 1
    assert f"this system is {arch}; metascope needs 64-bit Raspberry Pi OS Bookworm (arm64)" in refused.stderr
    assert not steps(refused.stdout) and log.read_text() == "dpkg --print-architecture\n"
    dry = install(None, stubs, "--dry-run", "--model", str(model))
    assert dry.returncode == 0 and "a real install would stop here" in dry.stdout
    stub_commands(tmp_path / "bin", log, dpkg="echo arm64")
    accepted = install(None, stubs, "--dry-run", "--model", str(model))
    assert accepted.returncode == 0 and "would stop here" not in accepted.stdout


def test_the_pi_gets_the_interpreter_release_bookworm_can_load() -> None:
    """ai-edge-litert's aarch64 wheel needs GLIBCXX_3.4.30 (Bookworm's ceiling): the Pi's pip
    install is pinned to 2.3.0, inside the range the edge extra allows."""
    import tomllib

    lines = (REPO / "deploy" / "constraints-pi.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    assert pins["ai-edge-litert"] == "2.3.0"
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["edge"]
    assert extra == ["ai-edge-litert>=2.3,<3"]


def test_a_service_waiting_for_the_camera_does_not_block_the_install(
    tmp_path: Path, model: Path, project: Path
) -> None:
    """Issue 17.3: install.sh starts the service without waiting for READY and reports, after a
    bounded wait, what the service says it is doing."""
    root = tmp_path / "root"
    venv_installed(root, tmp_path / "log")
    libcamera_installed(root)
    status = "waiting for the camera (camera busy: another program holds it (rpicam-hello ...))"
    waiting = systemd_unit("activating", status=status, looks=tmp_path / "looks", start_job_lingers=True)
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="exit 2", systemctl=waiting)
    env = {key: value for key, value in os.environ.items() if key != "SUDO_USER"}
    env.update(PATH=f"{stubs}:{os.environ['PATH']}", METASCOPE_ROOT=str(root), METASCOPE_START_WAIT_S="2")
    result = subprocess.run(
        ["bash", str(project / "deploy/install.sh"), "--model", str(model)],
        capture_output=True, text=True, env=env, timeout=40,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"the service is starting: {status}" in result.stdout
    assert "systemctl restart --no-block metascope.service" in (tmp_path / "log").read_text()


def test_an_install_that_leaves_no_camera_tuning_file_fails_naming_libcamera_ipa(
    tmp_path: Path, model: Path, project: Path
) -> None:
    """Issue 17.5: libcamera-ipa (the IPA modules and tuning files) was only a Recommends, which
    --no-install-recommends skips: without a tuning file libcamera registers no camera."""
    root = tmp_path / "root"
    venv_installed(root, tmp_path / "log")
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="exit 2")
    result = install(root, stubs, "--model", str(model), project=project)
    assert result.returncode == 1
    assert "no camera tuning file" in result.stderr and "libcamera-ipa" in result.stderr, result.stderr
    assert "systemctl restart" not in (tmp_path / "log").read_text(), "stopped before starting the service"


def test_a_model_path_starting_with_a_dash_is_a_path(tmp_path: Path, model: Path) -> None:
    """Issue 18 F31: `install.sh --model -x.tflite` died with 'basename: invalid option'."""
    dashed = tmp_path / "-x.tflite"
    dashed.write_bytes(model.read_bytes())
    dashed.with_suffix(".json").write_text(model.with_suffix(".json").read_text())
    stubs = stub_commands(tmp_path / "bin", tmp_path / "log", getent="exit 2")
    env = {key: value for key, value in os.environ.items() if key != "SUDO_USER"}
    env.update(PATH=f"{stubs}:{os.environ['PATH']}", METASCOPE_ROOT=str(tmp_path / "root"))
    result = subprocess.run(
        ["bash", str(REPO / "deploy/install.sh"), "--dry-run", "--model", "-x.tflite"],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    models = f"{tmp_path}/root/opt/metascope/models"
    assert ["install", "-m", "0644", str(dashed), f"{models}/-x.tflite"] in steps(result.stdout)
    assert "Environment=METASCOPE_MODEL=/opt/metascope/models/-x.tflite" in result.stdout
