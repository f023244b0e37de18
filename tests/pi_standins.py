"""Stand-ins for what belongs to a Raspberry Pi when deploy/install.sh really runs in a test:
apt, the user tools, systemd and pip. The install goes into a scratch root (METASCOPE_ROOT);
its file handling is what is tested. Used by the install tests (install.sh run here) and the
push tests (install.sh run by push.sh on the far side of a real sshd)."""

from __future__ import annotations

from pathlib import Path

STANDIN_COMMANDS = ("apt-get", "useradd", "usermod", "getent", "systemctl", "dpkg")


def stub_commands(folder: Path, log: Path, **behaviour: str) -> Path:
    """Scripts named like system commands that log their arguments; `behaviour` gives one its
    own shell body (e.g. getent='exit 2')."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in STANDIN_COMMANDS:
        script = folder / name
        default = {"dpkg": "echo arm64", "systemctl": 'case "$1" in is-active) echo active ;; esac'}.get(name, "exit 0")
        body = behaviour.get(name, default)
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{body}\n')
        script.chmod(0o755)
    return folder


def libcamera_installed(root: Path) -> None:
    """What apt's libcamera-ipa puts in the scratch root: a tuning file of the Pi's IPA."""
    tuning = root / "usr/share/libcamera/ipa/rpi/pisp/imx477.json"
    tuning.parent.mkdir(parents=True, exist_ok=True)
    tuning.write_text('{"version": 2.0}\n')


def venv_installed(root: Path, log: Path) -> None:
    """The service's venv, already there (install.sh reuses it): its python logs what pip was
    asked to do instead of doing it (pip would need the network)."""
    python = root / "opt/metascope/venv/bin/python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f'#!/bin/sh\necho "pip $*" >> "{log}"\n')
    python.chmod(0o755)


def systemd_unit(*states: str, status: str, looks: Path, start_job_lingers: bool = False) -> str:
    """A systemctl body (stub_commands(systemctl=...)) for the metascope unit, a Type=notify
    service. Each look at its state (`is-active`, `status`) takes the next of `states`, the last
    one stays: ("active", "failed") is a service that dies after install.sh saw it running.
    `status` exits 3 unless the unit is active, as systemctl does (an activating unit too);
    `show` gives `status` as the unit's StatusText. start_job_lingers: the unit has not sent
    READY=1 (the camera is busy): its start job stays listed and a plain `restart` waits for it
    (here 120 s, on a Pi for ever: the service extends its start timeout while it waits).
    `looks` is a file the stand-in counts its looks in."""
    job = 'echo "1 metascope.service start running"' if start_job_lingers else ":"
    blocking_restart = "sleep 120 </dev/null >/dev/null 2>&1" if start_job_lingers else ":"
    return f"""look() {{
    echo >> "{looks}"
    n=$(wc -l < "{looks}")
    set -- {" ".join(states)}
    while [ "$n" -gt 1 ] && [ $# -gt 1 ]; do shift; n=$((n - 1)); done
    state=$1
}}
case " $* " in
*" list-jobs "*) {job} ;;
*" restart --no-block "*) ;;
*" restart "*) {blocking_restart} ;;
*" is-active "*) look; echo "$state"; [ "$state" = active ] || exit 3 ;;
*" status "*) look; echo "* metascope.service"; echo "     Active: $state"; [ "$state" = active ] || exit 3 ;;
*" show "*) echo "{status}" ;;
esac"""
