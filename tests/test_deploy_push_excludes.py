"""deploy/push.sh leaves every virtualenv and build output behind, whatever its name: a folder
holding pyvenv.cfg is a virtualenv (`make demo`'s .venv-edge, a lab's own env-3.11), and what the
checkout's git ignores is build output. Through a real sshd (tests/sshd_harness.py), pushing a
copy of this project that carries such folders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from sshd_harness import ALIAS, SshServer


def project_copy(root: Path) -> Path:
    """This project's tracked files in a git checkout of their own, as a lab clones it."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def virtualenv(folder: Path) -> None:
    (folder / "lib" / "python3.11" / "site-packages" / "numpy").mkdir(parents=True)
    (folder / "lib" / "python3.11" / "site-packages" / "numpy" / "__init__.py").write_text("# 30 MB of it\n")
    (folder / "bin").mkdir()
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.2\n")


def test_push_leaves_out_every_virtualenv_and_build_output(sshd: SshServer, model_copy: Path, tmp_path: Path) -> None:
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    project = project_copy(tmp_path / "project")
    for name in (".venv-edge", "env-3.11", "tools/pi-env"):  # make demo's, a lab's, one in a subfolder
        virtualenv(project / name)
    (project / "out-arm64" / "wheels").mkdir(parents=True)  # a lab's own build folder, which its git ignores
    (project / "out-arm64" / "wheels" / "metascope-0.5-py3-none-any.whl").write_bytes(b"PK")
    (project / ".git" / "info" / "exclude").write_text("out-arm64/\n")
    (project / "build" / "lib").mkdir(parents=True)  # the project's own .gitignore names build/
    (project / "build" / "lib" / "edge.py").write_text("# stale\n")
    (project / "models" / "lab-cells.tflite").write_bytes(b"a lab's model it has not committed")

    remote = tmp_path / "pi-home" / "metascope-deploy"
    result = subprocess.run(
        ["bash", str(project / "deploy" / "push.sh"), ALIAS, "-F", str(sshd.ssh_config), "--dry-run", "--model",
         str(model_copy), "--remote-dir", str(remote)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert (remote / "pyproject.toml").is_file() and (remote / "edge" / "cli.py").is_file()
    assert (remote / "models" / "lab-cells.tflite").is_file(), "a file git merely does not track still goes"
    assert not list(remote.rglob("pyvenv.cfg")), "no virtualenv on the Pi"
    for left_out in (".venv-edge", "env-3.11", "tools/pi-env", "out-arm64", "build"):
        assert not (remote / left_out).exists(), left_out
