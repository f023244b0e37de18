"""The one exit-status table (edge/errors.py ExitCode): each number means one thing, every
program's statuses are in it, and the README and the systemd unit say the same."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

import edge.errors
from edge.errors import ExitCode


def test_each_exit_status_has_one_name_and_one_meaning() -> None:
    """An IntEnum member with an existing number is only an alias: a second meaning would hide."""
    assert len({int(code) for code in ExitCode}) == len(ExitCode.__members__), ExitCode.__members__
    strays = sorted(name for name in vars(edge.errors) if name.startswith("EXIT_"))
    assert not strays, f"exit statuses defined outside ExitCode: {strays}"


# The deploy scripts run where edge may not be importable (a desktop's plain shell, the
# standard-library-only merge), so each keeps its own copy of the statuses it uses, by name.
SHELL_SCRIPTS = sorted(path for path in (REPO / "deploy").glob("*.sh") if path.name != "ssh_common.sh")


def shell_constants(text: str) -> dict[str, int]:
    """Every EXIT_NAME=N a shell script assigns."""
    return {match[1]: int(match[2]) for match in re.finditer(r"\bEXIT_([A-Z_]+)=(\d+)\b", text)}


def python_constants(text: str) -> dict[str, int]:
    """Every module-level EXIT_NAME = N (or EXIT_A, EXIT_B = N, M) a Python file assigns."""
    found = {}
    for node in ast.parse(text).body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            values = node.value.elts if isinstance(node.value, ast.Tuple) and len(names) > 1 else [node.value]
            for name, value in zip(names, values, strict=False):
                if isinstance(name, ast.Name) and name.id.startswith("EXIT_"):
                    found[name.id.removeprefix("EXIT_")] = ast.literal_eval(value)
    return found


# The Python ones: pull_merge.py and its modules keep theirs in pull_errors.py (any other that
# assigns a status is checked too).
PYTHON_SCRIPTS = sorted(path for path in (REPO / "deploy").glob("*.py") if python_constants(path.read_text()))


def test_the_python_copies_are_found() -> None:
    assert REPO / "deploy" / "pull_errors.py" in PYTHON_SCRIPTS


@pytest.mark.parametrize("script", [*SHELL_SCRIPTS, *PYTHON_SCRIPTS], ids=lambda path: path.name)
def test_the_deploy_scripts_copies_agree_with_the_table(script: Path) -> None:
    text = script.read_text()
    constants = python_constants(text) if script.suffix == ".py" else shell_constants(text)
    assert constants, f"{script.name} names no exit status"
    for name, value in constants.items():
        assert name in ExitCode.__members__, f"{script.name}: EXIT_{name} is not in edge/errors.py ExitCode"
        assert value == ExitCode[name], f"{script.name}: EXIT_{name}={value}, the table says {int(ExitCode[name])}"
    if script.suffix == ".sh":  # `die 3 ...` (ssh_common.sh) would escape this check: statuses go by name
        bare = re.findall(r"\bdie +[0-9]+", text)
        assert not bare, f"{script.name}: exit statuses by number, not by name: {bare}"


def test_the_copy_parsers_read_both_forms() -> None:
    assert shell_constants('EXIT_USAGE=2 EXIT_UNREACHABLE=7\ndie "$EXIT_USAGE" x') == {"USAGE": 2, "UNREACHABLE": 7}
    text = "EXIT_A, EXIT_B = 5, 1\nEXIT_C = 2\nOTHER = 3\nPAIR = (1, 2)\n"
    assert python_constants(text) == {"A": 5, "B": 1, "C": 2}
