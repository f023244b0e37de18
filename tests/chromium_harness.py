"""Debian's Chromium, headless, for the tests that check a page in a real browser (the report's,
tests/train/test_results_report.py, and the live view's, tests/test_live_browser.py). Each run
gets a fresh profile and nothing of the machine's: no first-run pages, no background requests.
Missing Chromium skips, except under CI (METASCOPE_CI=1; .ci/run installs it), where it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")  # Debian's package, and Ubuntu's name for it


def chromium() -> str:
    found = next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)
    if found is None:
        reason = "headless Chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("METASCOPE_CI") == "1":
            pytest.fail(f"CI must check pages in a browser, but {reason}")
        pytest.skip(reason)
    return found


def browser(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Chromium headless with ``args`` (e.g. --dump-dom URL, --screenshot=FILE URL)."""
    with tempfile.TemporaryDirectory(prefix="metascope-chromium-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
