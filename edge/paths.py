"""Where metascope finds its model by default."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_NAME = "mda231-pc3"
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
