"""deploy/push.sh against a real sshd on loopback. The install on the far side runs as
--dry-run: a real one would install a service on the machine running the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from sshd_harness import ALIAS, DEAD_ALIAS, SshServer

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
