"""The shape of the code: dependencies run one way, and the light commands stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from edge.errors import ExitCode

PACKAGES = ("edge", "train")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function (both count: an
    import inside a function is still a dependency), except under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name not in PACKAGES:  # a package's __init__ holds no imports of its modules
                found.add(name)
    found.discard(module_name(path))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_in_edge_or_train() -> None:
    modules = project_modules()
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_edge_never_imports_train() -> None:
    modules = project_modules()
    for name, path in modules.items():
        if name.startswith("edge"):
            assert not {m for m in imports_of(path, modules) if m.startswith("train")}, name


@pytest.fixture(scope="module")
def results(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory with a real results database: `metascope run` on a few synthetic frames."""
    state = tmp_path_factory.mktemp("state")
    run = [sys.executable, "-m", "edge", "run", "--source", "synthetic", "--model", str(tiny_model[0])]
    result = subprocess.run(
        [*run, "--max-frames", "5", "--state-dir", str(state)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return state


LIGHT_COMMANDS = [
    ["status"],
    ["status", "--json"],
    *(["export", "--table", table] for table in ("views", "cells", "frames", "runs")),
    ["export", "--table", "views", "--format", "jsonl"],
]


def run_light(command: list[str], state: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``metascope COMMAND --state-dir STATE`` in a fresh interpreter; what it printed, and which
    of numpy, scipy and PIL it imported."""
    script = (
        "import sys\n"
        "from edge.cli import main\n"
        f"code = main({[*command, '--state-dir', str(state)]!r})\n"
        "sys.stdout.flush()\n"
        "print('HEAVY', sorted(m for m in ('numpy', 'scipy', 'PIL') if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    heavy = [line for line in result.stderr.splitlines() if line.startswith("HEAVY ")]
    assert heavy, result.stdout + result.stderr
    return result, ast.literal_eval(heavy[-1].removeprefix("HEAVY "))


@pytest.mark.parametrize("command", LIGHT_COMMANDS, ids=" ".join)
def test_status_and_export_of_a_real_database_import_no_numpy_scipy_or_pillow(command: list[str], results) -> None:
    """`ssh pi metascope status` and the pulls' exports answer fast and work even when numpy is
    broken: on a database with rows in every table, not only on the empty state's error path."""
    result, heavy = run_light(command, results)
    assert result.returncode == 0, result.stdout + result.stderr
    assert heavy == [], f"{' '.join(command)} imported {heavy}"
    if command[:2] == ["export", "--table"]:  # a header, then a row each (frames: one per frame run)
        rows = result.stdout.splitlines()[0 if command[-1] == "jsonl" else 1 :]
        assert rows and (command[2] != "frames" or len(rows) == 5), result.stdout
    elif "--json" in command:
        assert json.loads(result.stdout)["service"]["counters"]["frames"] == 5, result.stdout
    else:
        assert "5 frames" in result.stdout, result.stdout


@pytest.mark.parametrize("command", [["status"], ["export", "--table", "runs"], ["status", "--json"]])
def test_status_and_export_without_a_database_import_no_numpy_scipy_or_pillow(command: list[str], tmp_path) -> None:
    result, heavy = run_light(command, tmp_path)
    assert result.returncode == ExitCode.FAILED and "no results database" in result.stderr, result.stderr
    assert heavy == [], f"{' '.join(command)} imported {heavy}"
