"""Run an attack in a child process that cannot take the test run down with it: an address-space
limit (RLIMIT_AS, 1 GiB) and a time limit. For hostile-input tests whose failure, should a fix
regress, would be a hang or exhausted memory rather than a wrong answer."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEMORY_LIMIT_BYTES = 1 << 30  # 1 GiB: room for Python, numpy and a TFLite interpreter, not for a bomb
TIME_LIMIT_S = 120.0  # a safety net against a hang on a busy machine, not a measure of speed


def run_limited(argv: Sequence[str], time_limit_s: float = TIME_LIMIT_S) -> subprocess.CompletedProcess[str]:
    """``argv`` run with this checkout first on the path, under both limits; a child that runs past
    the time limit is killed and the test fails saying it hung."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=time_limit_s, env=env, preexec_fn=limit_memory
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{list(argv)} ran past {time_limit_s:g} s: it hangs") from None


def run_python(code: str, *args: str, time_limit_s: float = TIME_LIMIT_S) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` with this interpreter, under both limits."""
    return run_limited([sys.executable, "-c", code, *args], time_limit_s)
