"""Find a TFLite interpreter: ai_edge_litert, then tflite_runtime, then tensorflow.lite.

ai-edge-litert is the maintained successor and the Pi's default. tflite-runtime 2.14 is
the last of its line (numpy<2 only, and it crashes on per-channel int8 dense heads, which
is why train/ exports dense layers per-tensor). tensorflow.lite is the desktop's last resort.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edge.errors import ModelError

# (name reported, module to import, pip package that provides it)
CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow", "tensorflow"),
)
INTERPRETER_NAMES = tuple(name for name, _, _ in CANDIDATES)
# Interpreter threads a command or the config may ask for: 16x a Pi's 4 cores is already
# useless; far more (100000) made the interpreter segfault creating them.
MAX_THREADS = 64


class InterpreterUnavailableError(ModelError):
    """None of the supported TFLite interpreters is installed."""


@dataclass(frozen=True)
class InterpreterChoice:
    name: str  # import name, e.g. "ai_edge_litert"
    version: str
    interpreter_class: Any


def find_interpreter(preferred: str | None = None) -> InterpreterChoice:
    """The first importable interpreter in order (or only ``preferred``, when given)."""
    candidates = [c for c in CANDIDATES if preferred in (None, c[0])]
    if not candidates:
        names = ", ".join(c[0] for c in CANDIDATES)
        raise InterpreterUnavailableError(f"unknown interpreter {preferred!r}; choose one of {names}")
    failures = []
    for name, module_name, package in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        if name == "tensorflow.lite":
            interpreter_class = module.lite.Interpreter
            version = getattr(module, "__version__", "unknown")
        else:
            interpreter_class = module.Interpreter
            root = importlib.import_module(name)
            version = getattr(root, "__version__", None) or _distribution_version(package)
        return InterpreterChoice(name, version, interpreter_class)
    raise InterpreterUnavailableError(
        "no TFLite interpreter is installed; install one with `pip install ai-edge-litert` "
        "(or `pip install tflite-runtime` on numpy<2 systems). Tried: " + "; ".join(failures)
    )


def _distribution_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
