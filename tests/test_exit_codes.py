"""The one exit-status table (edge/errors.py ExitCode): each number means one thing, every
program's statuses are in it, and the README and the systemd unit say the same."""

from __future__ import annotations

import edge.errors
from edge.errors import ExitCode


def test_each_exit_status_has_one_name_and_one_meaning() -> None:
    """An IntEnum member with an existing number is only an alias: a second meaning would hide."""
    assert len({int(code) for code in ExitCode}) == len(ExitCode.__members__), ExitCode.__members__
    strays = sorted(name for name in vars(edge.errors) if name.startswith("EXIT_"))
    assert not strays, f"exit statuses defined outside ExitCode: {strays}"
