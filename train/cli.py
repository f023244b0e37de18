"""The `metascope-train` command (filled in by the training work)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("metascope-train: not built yet", file=sys.stderr)
    return 2
