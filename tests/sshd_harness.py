"""A real OpenSSH server for the deploy tests, run as a child process on 127.0.0.1.

Everything it uses is generated in a temp folder: a throwaway host key, a client key that is
the only authorized key, an sshd_config that listens on loopback only, and an ssh_config with
a host alias the scripts under test connect to (`ssh -F`). No system ssh configuration is
read or changed. It lets in only the user the tests run as (root in CI).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
# sshd run as root insists on its privilege-separation directory (compiled in, not
# configurable). It is an empty runtime dir that the distro's own unit would create.
PRIVSEP_DIR = Path("/run/sshd")
ALIAS = "scope-test"  # reaches the test sshd
SECOND_ALIAS = "scope-b"  # the same sshd under another name: a second microscope
DEAD_ALIAS = "scope-down"  # a loopback port nothing listens on


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    ssh_config: Path  # pass with `ssh -F`; defines ALIAS, SECOND_ALIAS and DEAD_ALIAS
    log: Path

    def ssh(self, command: str, host: str = ALIAS) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), host, command], capture_output=True, text=True, timeout=60
        )


def require_tools(*names: str) -> None:
    """Skip when a tool is missing, except under CI (METASCOPE_CI=1), where it is a failure."""
    missing = [name for name in names if shutil.which(name) is None and not (name == "sshd" and SSHD.exists())]
    if not missing:
        return
    reason = f"not installed: {', '.join(missing)} (apt-get install openssh-server openssh-client rsync shellcheck)"
    if os.environ.get("METASCOPE_CI") == "1":
        pytest.fail(f"CI must run the deploy tests, but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    for old in (path, path.with_suffix(".pub")):
        old.unlink(missing_ok=True)  # ssh-keygen would ask before overwriting
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "metascope-test", "-f", str(path)], check=True)


def _write_configs(
    folder: Path, port: int, dead_port: int, user: str, environment: dict[str, str]
) -> tuple[Path, Path]:
    _keygen(folder / "host_key")
    _keygen(folder / "client_key")
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "client_key.pub").read_text())
    sshd_config = folder / "sshd_config"
    sshd_config.write_text(
        f"""ListenAddress 127.0.0.1
Port {port}
HostKey {folder / "host_key"}
PidFile none
AuthorizedKeysFile {authorized}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""
        # One SetEnv line: sshd keeps only the first.
        + (
            "SetEnv " + " ".join(f'"{name}={value}"' for name, value in environment.items()) + "\n"
            if environment
            else ""
        )
    )
    ssh_config = folder / "ssh_config"
    common = f"""  HostName 127.0.0.1
  User {user}
  IdentityFile {folder / "client_key"}
  IdentitiesOnly yes
  UserKnownHostsFile {folder / "known_hosts"}
  StrictHostKeyChecking accept-new
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
"""
    ssh_config.write_text(
        f"Host {ALIAS} {SECOND_ALIAS}\n  Port {port}\n{common}\nHost {DEAD_ALIAS}\n  Port {dead_port}\n{common}"
    )
    return sshd_config, ssh_config


@contextmanager
def running_sshd(folder: Path, environment: dict[str, str] | None = None) -> Iterator[SshServer]:
    """`environment`: variables every session on this server gets (sshd's SetEnv, which wins
    over the PATH sshd sets itself: a far side whose system commands are stand-ins)."""
    require_tools("sshd", "ssh", "ssh-keygen")
    user = getpass.getuser()
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    port, dead_port = free_port(), free_port()
    sshd_config, ssh_config = _write_configs(folder, port, dead_port, user, environment or {})
    check = subprocess.run([str(SSHD), "-t", "-f", str(sshd_config)], capture_output=True, text=True)
    assert check.returncode == 0, f"sshd rejects the generated config: {check.stderr}"
    log = folder / "sshd.log"
    with log.open("w") as log_handle:
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(sshd_config)], stderr=log_handle)
    try:
        server = SshServer(port=port, user=user, ssh_config=ssh_config, log=log)
        _wait_until_listening(process, server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(process: subprocess.Popen[bytes], server: SshServer) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sshd exited ({process.returncode}): {server.log.read_text()}")
        if "Server listening" in server.log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"sshd did not start listening: {server.log.read_text()}")
