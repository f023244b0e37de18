"""Where metascope finds its model by default, and file helpers the commands and the service share."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

DEFAULT_MODEL_NAME = "mda231-pc3"  # accurate: ImageNet-pretrained EfficientNet-Lite0
FAST_MODEL_NAME = "mda231-pc3-fast"  # its recipe at 64 px, 44 % of its cost: for many cells a frame
# A checkout (or editable install) ships the default model in models/ beside edge/;
# deploy/install.sh puts it in /opt/metascope/models on a Pi.
MODEL_DIRS = (Path(__file__).resolve().parent.parent / "models", Path("/opt/metascope/models"))


def default_model_path() -> Path | None:
    """$METASCOPE_MODEL, else the first default model found in MODEL_DIRS, else None."""
    configured = os.environ.get("METASCOPE_MODEL")
    if configured:
        return Path(configured)
    for folder in MODEL_DIRS:
        candidate = folder / f"{DEFAULT_MODEL_NAME}.tflite"
        if candidate.is_file():
            return candidate
    return None


def find_model(model: str | os.PathLike[str]) -> Path:
    """A path as given; a bare NAME (no folder, no suffix) that is not a model in the current
    folder is the first NAME.tflite in MODEL_DIRS (so the config can say
    ``path = "mda231-pc3-fast"``), or the name as a path if none exists."""
    path = Path(model)
    if path.parent == Path(".") and not path.suffix and not path.with_name(path.name + ".tflite").is_file():
        for folder in MODEL_DIRS:
            candidate = folder / f"{path.name}.tflite"
            if candidate.is_file():
                return candidate
    return path


class FileRefused(OSError):
    """A file that is not read at all: not a regular file, or larger than its reader allows."""


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))  # fmt: skip


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The content of a regular file of at most ``max_bytes``; anything else is a FileRefused
    naming the problem, before a byte is read: a FIFO would block the read (it is opened without
    waiting for a writer), /dev/zero would never end, a huge file would fill memory."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)  # of what was opened, not of what the name points at later
        if not stat.S_ISREG(status.st_mode):
            kind = next((name for test, name in _KINDS if test(status.st_mode)), "a special file")
            raise FileRefused(f"not a regular file ({kind})")
        if status.st_size > max_bytes:
            raise FileRefused(f"{status.st_size} bytes is over the {max_bytes}-byte limit")
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            content = handle.read(max_bytes + 1)  # a file still growing is cut off here, not followed
    finally:
        os.close(descriptor)
    if len(content) > max_bytes:
        raise FileRefused(f"grew past the {max_bytes}-byte limit while it was read")
    return content


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it exists, else its nearest existing parent (a folder `run` has not
    made yet is judged, and measured for free space, where it will be made)."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


LIVE_SOCKET_NAME = "live.sock"  # `metascope run`'s live view, in the state directory
DOCTOR_SOCKET_NAME = "metascope-live.sock"  # `doctor --capture N --live`, in the login user's runtime dir


def live_socket_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where `metascope run` serves its live view: the state directory, which the metascope group
    can enter (the login user is in it) and nothing outside the unit's sandbox needs to write."""
    return Path(state_dir) / LIVE_SOCKET_NAME


def doctor_socket_path() -> Path:
    """Where `doctor --capture N --live` serves: a folder the user running it can write whatever
    the service's state directory allows. ssh logins get $XDG_RUNTIME_DIR (/run/user/UID, private
    to the user) from pam_systemd; without it, a folder of the user's own under the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / DOCTOR_SOCKET_NAME
    import tempfile

    return Path(tempfile.gettempdir()) / f"metascope-{os.getuid()}" / DOCTOR_SOCKET_NAME
