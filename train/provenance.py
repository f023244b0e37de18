"""What the card records about how and on what a model was made."""

from __future__ import annotations

import platform
import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "ai-edge-litert", "pillow", "metascope")
SOURCE_FILES = ("SOURCE.txt", "SOURCE.md", "README.txt")


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def command_line(argv: list[str] | None) -> str:
    words = ["metascope-train", *(sys.argv[1:] if argv is None else argv)]
    return shlex.join(words)


def data_provenance(root: Path) -> tuple[str, str]:
    """(provenance, licence) from a SOURCE.txt beside the label folders, if there is one.

    Provenance: the text up to the licence line, on one line. Licence: the "Licence:" /
    "License:" line, else the first line of a LICENSE file.
    """
    for name in SOURCE_FILES:
        source = root / name
        if source.is_file():
            text = source.read_text(encoding="utf-8", errors="replace")
            licence_match = re.search(r"^\s*licen[cs]e\s*:\s*(.+(?:\n\s{4,}.+)*)", text, re.IGNORECASE | re.MULTILINE)
            licence = " ".join(licence_match.group(1).split()) if licence_match else ""
            head = text[: licence_match.start()] if licence_match else text
            return " ".join(head.split()), licence or _licence_file(root)
    return "", _licence_file(root)


def _licence_file(root: Path) -> str:
    for name in ("LICENSE", "LICENCE", "LICENSE.txt", "COPYING"):
        path = root / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    return f"{line.strip()} ({name} in the data folder)"
    return ""
