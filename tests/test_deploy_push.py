"""deploy/push.sh against a real sshd on loopback. Most tests run the install on the far side
as --dry-run; the real install runs on a far side of its own (the `pi` fixture: a sshd whose
sessions see stand-ins for the Pi's system commands and a scratch root), so push.sh's closing
look at the service is tested as a user meets it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from pi_standins import STANDIN_COMMANDS, libcamera_installed, stub_commands, systemd_unit, venv_installed
from sshd_harness import ALIAS, DEAD_ALIAS, SshServer, require_tools, running_sshd

from edge.errors import ExitCode

PUSH = REPO / "deploy" / "push.sh"


def push(sshd: SshServer, *args: str, host: str = ALIAS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PUSH), host, "-F", str(sshd.ssh_config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_push_copies_the_project_and_runs_the_installer(sshd: SshServer, model_copy: Path, tmp_path: Path) -> None:
    remote = tmp_path / "pi-home" / "metascope-deploy"
    stale = remote / "edge" / "removed_module.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# deleted from the project since the last push\n")
    (remote / ".metascope-push").write_text("made by deploy/push.sh\n")  # the last push made it

    result = push(sshd, "--dry-run", "--model", str(model_copy), "--remote-dir", str(remote))
    assert result.returncode == 0, result.stderr + result.stdout
    for needed in ("pyproject.toml", "README.md", "deploy/install.sh", "edge/cli.py", "systemd/metascope.service"):
        assert (remote / needed).is_file(), needed
    assert (remote / "edge/cli.py").read_bytes() == (REPO / "edge/cli.py").read_bytes()
    for left_out in (".git", ".venv", "var", "__pycache__", ".pytest_cache", ".ruff_cache"):
        assert not list(remote.rglob(left_out)), left_out
    assert not stale.exists(), "the copy mirrors the project"
    assert (remote / ".pushed-model/tiny.tflite").read_bytes() == model_copy.read_bytes()
    assert (remote / ".pushed-model/tiny.json").is_file()
    # install.sh ran there, from the copy, with the pushed model
    assert "Dry run: these are the steps" in result.stdout
    assert f"{remote}/.pushed-model/tiny.tflite" in result.stdout
    assert f"{remote}/deploy/constraints-pi.txt" in result.stdout


def test_push_mirrors_only_into_a_folder_it_made(sshd: SshServer, model_copy: Path, tmp_path: Path) -> None:
    """--remote-dir is resolved on the Pi: a path that leads into a folder push did not make
    (a home, /var/lib, ...) is refused before anything is copied, whatever its spelling."""
    victim = tmp_path / "someones-data"
    victim.mkdir()
    (victim / "keep.txt").write_text("not push's to delete\n")
    for spelling in (f"{victim}/sub/..", f"{victim}/.", str(victim), f"{victim}/../someones-data"):
        result = push(sshd, "--dry-run", "--model", str(model_copy), "--remote-dir", spelling)
        assert result.returncode == 2, (spelling, result.stderr)
        assert "was not made by push.sh" in result.stderr
    assert [p.name for p in victim.iterdir()] == ["keep.txt"], "nothing copied into it, nothing deleted"
    # A new folder is made and marked; an empty one is taken and marked.
    fresh = tmp_path / "new" / "metascope-deploy"
    assert push(sshd, "--dry-run", "--model", str(model_copy), "--remote-dir", str(fresh)).returncode == 0
    assert (fresh / ".metascope-push").is_file() and (fresh / "pyproject.toml").is_file()


def test_a_folder_an_earlier_push_made_without_a_mark_is_recognised(
    sshd: SshServer, model_copy: Path, tmp_path: Path
) -> None:
    earlier = tmp_path / "metascope-deploy"
    (earlier / "deploy").mkdir(parents=True)
    (earlier / "deploy" / "push.sh").write_text("# an earlier push.sh\n")
    (earlier / "pyproject.toml").write_text('[project]\nname = "metascope"\n')
    result = push(sshd, "--dry-run", "--model", str(model_copy), "--remote-dir", str(earlier))
    assert result.returncode == 0, result.stderr
    assert (earlier / ".metascope-push").is_file()


def test_push_reports_an_unreachable_host(sshd: SshServer, tmp_path: Path) -> None:
    result = push(sshd, "--dry-run", "--remote-dir", str(tmp_path / "x"), host=DEAD_ALIAS)
    assert result.returncode == ExitCode.UNREACHABLE
    assert f"cannot reach {DEAD_ALIAS} over ssh" in result.stderr


def test_push_reports_a_failed_install(sshd: SshServer, tmp_path: Path) -> None:
    tflite = tmp_path / "broken.tflite"
    tflite.write_bytes(b"not a model")
    tflite.with_suffix(".json").write_text('{"sha256": "' + "0" * 64 + '"}')
    result = push(sshd, "--dry-run", "--model", str(tflite), "--remote-dir", str(tmp_path / "copy"))
    assert result.returncode == 1
    assert "does not match its card" in result.stderr
    assert f"install.sh failed on {ALIAS}" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no HOST given"),
        ([ALIAS, "--model", "model.onnx"], "expected a .tflite file"),
        ([ALIAS, "--model", "missing.tflite"], "no such file"),
        ([ALIAS, "--wat"], "unknown option --wat"),
    ],
)
def test_bad_arguments_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(PUSH), *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_model_path_cannot_inject_options_into_rsync(sshd: SshServer, model_copy: Path, tmp_path: Path) -> None:
    """Issue 18 F3: a --model path (or a file a glob expands to) starting with '-' was read by
    rsync as its options: '-esh -c ...' ran a command on the desktop."""
    card = model_copy.with_suffix(".json").read_text()
    hostile = tmp_path / "-esh -c 'touch PWNED' x.tflite"
    hostile.write_bytes(model_copy.read_bytes())
    hostile.with_suffix(".json").write_text(card)
    dashed = tmp_path / "-x.tflite"  # a legal name that starts with a dash
    dashed.write_bytes(model_copy.read_bytes())
    dashed.with_suffix(".json").write_text(card)
    remote = tmp_path / "pi-home" / "metascope-deploy"
    for model, code in ((hostile.name, ExitCode.USAGE), (dashed.name, ExitCode.OK)):
        args = ["--dry-run", "--model", model, "--remote-dir", str(remote)]
        result = subprocess.run(
            ["bash", str(PUSH), ALIAS, "-F", str(sshd.ssh_config), *args],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
        assert not (tmp_path / "PWNED").exists(), "rsync ran a command named in the model path"
        assert result.returncode == code, (model, result.stderr)
        if code == ExitCode.USAGE:  # refused before anything is copied, as install.sh would
            assert "may only hold letters, digits" in result.stderr
    assert (remote / ".pushed-model" / "-x.tflite").read_bytes() == model_copy.read_bytes()


def test_a_git_clone_of_the_project_is_never_taken_for_an_earlier_push(
    sshd: SshServer, model_copy: Path, tmp_path: Path
) -> None:
    """Issue 18 F4: README offers cloning the project on the Pi; push mirrored into the clone
    with --delete (untracked files deleted, edits reverted)."""
    clone = tmp_path / "metascope"
    (clone / "deploy").mkdir(parents=True)
    (clone / "deploy" / "push.sh").write_text("# the project's push.sh, checked out\n")
    (clone / "pyproject.toml").write_text('[project]\nname = "metascope"\n')
    (clone / ".git").mkdir()
    (clone / "notes.txt").write_text("untracked work\n")
    result = push(sshd, "--dry-run", "--model", str(model_copy), "--remote-dir", str(clone))
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert f"{clone} on {ALIAS} is a git clone" in result.stderr and "rm -rf" in result.stderr, result.stderr
    assert (clone / "notes.txt").read_text() == "untracked work\n", "nothing deleted"
    assert not (clone / ".metascope-push").exists() and not (clone / "README.md").exists(), "nothing copied"


@dataclass(frozen=True)
class FakePi:
    sshd: SshServer  # its sessions find the stand-ins first on PATH and install into root
    root: Path  # METASCOPE_ROOT on the far side: where the install writes
    stubs: Path  # the stand-ins (tests/pi_standins.py), plus a sudo that runs its command
    log: Path  # every stand-in call, one a line

    def systemd(self, *states: str, status: str = "", start_job_lingers: bool = False) -> None:
        """How the far side's systemctl stand-in answers (pi_standins.systemd_unit)."""
        unit = systemd_unit(
            *states, status=status, looks=self.log.with_name("looks"), start_job_lingers=start_job_lingers
        )
        stub_commands(self.stubs, self.log, getent="exit 2", systemctl=unit)


@pytest.fixture
def pi(tmp_path: Path) -> Iterator[FakePi]:
    """A far side where push.sh's real (not --dry-run) install can run: the sshd sets every
    session's environment (sshd_config SetEnv: PATH with the stand-ins first, METASCOPE_ROOT, a
    2 s METASCOPE_START_WAIT_S). Chosen over the alternatives because it touches nothing outside
    this test's folder and leaves push.sh's command line as a user types it: ssh's SetEnv with
    sshd's AcceptEnv cannot set PATH (sshd sets its own after the client's variables),
    ~/.ssh/environment would be written into the real home of whoever runs the tests, and a
    ForceCommand wrapper would change the commands under test."""
    require_tools("rsync")
    root, stubs, log = tmp_path / "pi-root", tmp_path / "pi-bin", tmp_path / "pi-calls.log"
    venv_installed(root, log)
    libcamera_installed(root)
    stub_commands(stubs, log, getent="exit 2")
    sudo = stubs / "sudo"  # push.sh runs install.sh through sudo unless it logs in as root
    sudo.write_text(f'#!/bin/sh\necho "sudo $*" >> "{log}"\nexec "$@"\n')
    sudo.chmod(0o755)
    environment = {"PATH": f"{stubs}:{os.environ['PATH']}", "METASCOPE_ROOT": str(root), "METASCOPE_START_WAIT_S": "2"}
    with running_sshd(tmp_path / "pi-sshd", environment) as server:
        # A shell start-up file on the far side may put folders before the stand-ins: the install
        # must never reach this machine's own apt-get, useradd or systemctl.
        names = [*STANDIN_COMMANDS, "sudo"]
        found = server.ssh("command -v " + " ".join(names) + '; echo "$METASCOPE_ROOT"')
        expected = [*(str(stubs / name) for name in names), str(root)]
        if found.stdout.splitlines() != expected:
            pytest.fail(f"the far side does not see the stand-ins first: {found.stdout}{found.stderr}")
        yield FakePi(sshd=server, root=root, stubs=stubs, log=log)


def push_for_real(pi: FakePi, model: Path, remote: Path) -> subprocess.CompletedProcess[str]:
    result = push(pi.sshd, "--model", str(model), "--remote-dir", str(remote))
    calls = pi.log.read_text()
    assert "apt-get install -y -q --no-install-recommends python3-picamera2" in calls, "a real install ran"
    assert "systemctl restart --no-block metascope.service" in calls
    return result


def test_a_real_push_ends_with_the_running_service(pi: FakePi, model_copy: Path, tmp_path: Path) -> None:
    pi.systemd("active", status="classifying 12 cells a second")
    result = push_for_real(pi, model_copy, tmp_path / "pi-home" / "metascope-deploy")
    assert result.returncode == ExitCode.OK, result.stderr + result.stdout
    assert (pi.root / "opt/metascope/models/tiny.tflite").read_bytes() == model_copy.read_bytes()
    assert "the service is running: classifying 12 cells a second" in result.stdout
    assert "is starting" not in result.stdout + result.stderr
    assert f"==> service status on {ALIAS}" in result.stdout


def test_a_push_to_a_pi_whose_camera_is_busy_ends_saying_the_service_is_starting(
    pi: FakePi, model_copy: Path, tmp_path: Path
) -> None:
    """Issue 17.3: a Type=notify service waiting for the camera stays activating (its start job
    listed for ever, systemctl status exits 3): the install waits a bounded time
    (METASCOPE_START_WAIT_S) and push.sh ends with what the service says, not a failure."""
    waiting = "waiting for the camera (camera busy: another program holds it (rpicam-hello ...))"
    pi.systemd("activating", status=waiting, start_job_lingers=True)
    result = push_for_real(pi, model_copy, tmp_path / "pi-home" / "metascope-deploy")
    assert result.returncode == ExitCode.OK, result.stderr + result.stdout
    assert f"the service is starting: {waiting}" in result.stdout, "install.sh's report"
    assert f"push.sh: the service on {ALIAS} is starting: {waiting}" in result.stdout
    assert f"ssh {ALIAS} journalctl -u metascope -f" in result.stdout


def test_a_push_whose_service_then_fails_exits_failed_naming_the_journal(
    pi: FakePi, model_copy: Path, tmp_path: Path
) -> None:
    """The service was running when install.sh looked and has failed by the time push.sh looks
    (a crash seconds after the start): push.sh's own check says so."""
    pi.systemd("active", "failed", status="")
    result = push_for_real(pi, model_copy, tmp_path / "pi-home" / "metascope-deploy")
    assert "the service is running" in result.stdout, "the install itself succeeded"
    assert result.returncode == ExitCode.FAILED, result.stderr + result.stdout
    expected = f"the metascope service on {ALIAS} is not running; see: ssh {ALIAS} journalctl -u metascope -n 50"
    assert expected in result.stderr
