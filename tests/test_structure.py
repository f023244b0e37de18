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


# Small units: a function a reader takes in at once, a class with one job. A function is
# measured from its `def` line to its last line (docstring and comments included, decorators
# not); a class by the functions defined in its body (properties count). No exceptions.
MAX_FUNCTION_LINES = 60
MAX_METHODS = 15
SIZED = ("edge/**/*.py", "train/**/*.py", "deploy/*.py")


def oversized(source: str, where: str) -> list[str]:
    """The functions over MAX_FUNCTION_LINES and classes over MAX_METHODS in ``source``, nested
    ones included, each as WHERE:Qualified.name and its size."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = child.end_lineno - child.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{prefix}{child.name}: {lines} lines")
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                methods = sum(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) for item in child.body)
                if methods > MAX_METHODS:
                    found.append(f"{where}:{prefix}{child.name}: {methods} methods")
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_no_function_over_60_lines_and_no_class_over_15_methods() -> None:
    paths = sorted({path for pattern in SIZED for path in REPO.glob(pattern)})
    assert len(paths) > 50, f"only {len(paths)} files under {SIZED}"
    too_big = [item for path in paths for item in oversized(path.read_text(), str(path.relative_to(REPO)))]
    assert not too_big, "split these (a function per step, a class per job):\n" + "\n".join(too_big)


def test_the_size_check_counts_lines_and_methods_nested_too() -> None:
    def function(name: str, lines: int, indent: str = "") -> str:
        body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 2))
        return f"{indent}def {name}():\n{body}{indent}    return 0\n"

    def methods(count: int) -> str:
        return "".join(f"    def m{i}(self):\n        pass\n" for i in range(count))

    outer = f"def outer():\n{function('inner', 61, '    ')}    return inner\n"
    source = function("exactly_60", 60) + outer + f"class Big:\n{methods(16)}class Small:\n{methods(15)}"
    assert oversized(source, "x.py") == [
        "x.py:outer: 63 lines",
        "x.py:outer.inner: 61 lines",
        "x.py:Big: 16 methods",
    ]
