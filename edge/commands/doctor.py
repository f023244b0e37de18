"""`metascope doctor`: check what the service needs, one line each: PASS, FAIL (with a fix), or SKIP."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.commands.common import UsageError, add_config_args, load_classifier, positive_int
from edge.paths import nearest_existing

if TYPE_CHECKING:
    from edge.config import Config


@dataclass
class Check:
    name: str
    outcome: str  # PASS, FAIL, WARN (works, but look at it) or SKIP
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.outcome:4s}  {self.name}: {self.detail}"
        return text + (f"\n      fix: {self.fix}" if self.outcome in ("FAIL", "WARN") and self.fix else "")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("doctor", help="check the set-up: PASS/FAIL per item, with a fix", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--model", help="check this model instead of the configured one")
    parser.add_argument(
        "--capture",
        type=positive_int,
        default=0,
        metavar="N",
        help="take N real frames (stop the service first): size, mean grey, clipped pixels, sharpness, capture "
        "time, sensor mode, colour space",
    )
    parser.add_argument(
        "--focus", action="store_true", help="with --capture: sharpness at each lens position (Camera Module 3)"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="with --capture: serve the live view (frames, focus score) until Ctrl-C, for `metascope live HOST "
        "--doctor` on a desktop; the report measures the last N frames",
    )
    parser.set_defaults(handler=doctor)


def run_checks(args: argparse.Namespace, camera_probe: Callable[[], tuple[bool, str]] | None = None) -> list[Check]:
    version = sys.version_info
    checks = [
        Check("python", "PASS" if version >= (3, 11) else "FAIL", platform.python_version(), "use Python 3.11 or newer")
    ]
    config, config_check = config_and_check(args)
    checks.append(config_check)
    checks += [numpy_check(), scipy_check()]
    checks += model_checks(config, args)
    checks.extend(camera_checks(config, args, camera_probe))
    checks.append(state_dir_check(config.state_path))
    checks.append(free_space_check(config))
    return checks


def config_and_check(args: argparse.Namespace) -> tuple[Config, Check]:
    """The config the rest is checked against (the defaults where it cannot be read), and its check."""
    from edge.config import Config, ConfigError, load_config

    try:
        config = load_config(args.config)
        check = Check("config", "PASS", config.origin)
    except ConfigError as exc:
        check = Check("config", "FAIL", str(exc), "correct the key named above (see README, 'The service')")
        config = Config()
    if getattr(args, "state_dir", None):
        from dataclasses import replace

        config = replace(config, state_dir=args.state_dir)
    return config, check


def numpy_check() -> Check:
    """numpy, and whether picamera2 imports against it."""
    import numpy

    numpy_ok = int(numpy.__version__.split(".")[0]) < 2
    picamera2_detail = ""
    try:
        import picamera2  # noqa: F401  (only to see whether it imports against this numpy)

        picamera2_detail = "; picamera2 imports with it"
    except ImportError:
        picamera2_detail = "; picamera2 not installed"
    except Exception as exc:  # an ABI mismatch shows up as odd errors at import
        numpy_ok = False
        picamera2_detail = f"; picamera2 fails to import: {type(exc).__name__}: {exc}"
    return Check(
        "numpy",
        "PASS" if numpy_ok else "FAIL",
        f"{numpy.__version__}{picamera2_detail}",
        "apt's picamera2 is built against numpy 1.x: pip install 'numpy<2' in the venv",
    )


def scipy_check() -> Check:
    try:
        import scipy

        return Check("scipy", "PASS", scipy.__version__)
    except ImportError as exc:
        return Check("scipy", "FAIL", str(exc), "sudo apt install python3-scipy, or pip install 'scipy>=1.10'")


def model_checks(config: Config, args: argparse.Namespace) -> list[Check]:
    """The interpreter, the model and its card, and (where they open) the scale of the rig's cells."""
    from edge.classify.classifier import ModelError
    from edge.classify.interpreter import find_interpreter

    checks = []
    interpreter = config.model.interpreter or None
    try:
        choice = find_interpreter(interpreter)
        checks.append(Check("interpreter", "PASS", f"{choice.name} {choice.version}"))
    except ModelError as exc:
        checks.append(Check("interpreter", "FAIL", str(exc), "pip install ai-edge-litert (the [edge] extra)"))

    try:
        classifier = load_classifier(args.model or config.model.path or None, 1, interpreter)
        checks.append(
            Check(
                "model",
                "PASS",
                f"{classifier.path} ({classifier.card.name}, sha256 {classifier.sha256[:12]}… verified)",
            )
        )
        checks.append(scale_check(config, classifier))
    except UsageError as exc:
        checks.append(
            Check(
                "model", "FAIL", str(exc), "install the model and its .json card (deploy/push.sh) or set [model] path"
            )
        )
    return checks


def free_space_check(config: Config) -> Check:
    existing = nearest_existing(config.state_path)
    free_mb = shutil.disk_usage(existing).free / 1024 / 1024
    need_mb = config.store.min_free_mb
    detail = f"{free_mb:.0f} MB free under {existing}"
    if free_mb < config.snapshots.min_free_mb:
        detail += f" (below snapshots.min_free_mb {config.snapshots.min_free_mb:g}: no snapshots)"
    return Check(
        "free space",
        "PASS" if free_mb >= need_mb else "FAIL",
        detail,
        f"free space (store.min_free_mb is {need_mb:g}) or lower store.retention_days / store.max_db_mb",
    )


def scale_check(config, classifier) -> Check:
    """Where nothing rescales the window (a pixel size missing), the cells of the last runs in
    the results database against the model card's training cells: WARN when far apart."""
    import sqlite3
    import statistics

    from edge.cells.scale import (
        AREA_RATIO_WARN,
        MIN_RIG_CELLS,
        RIG_AREA_SAMPLES,
        scale_unknown,
        scale_warning,
    )
    from edge.record.reading import StoreError, execute, open_readonly

    training = classifier.card.facts.training_median_area_px
    unknown = scale_unknown(classifier.input_spec.pixel_size_um, config.pipeline.pixel_size_um or None)
    if unknown is None:
        return Check("scale", "PASS", "the window is rescaled from the model's pixel size to pipeline.pixel_size_um")
    if training is None:
        return Check("scale", "SKIP", f"{unknown}; the model card records no training cell areas to compare with")
    try:
        db = open_readonly(config.database_path)
        try:
            query = "SELECT area_px FROM cells ORDER BY id DESC LIMIT ?"
            areas = [row[0] for row in execute(db, query, (RIG_AREA_SAMPLES,))]
        finally:
            db.close()
    except (StoreError, sqlite3.Error) as exc:
        return Check("scale", "SKIP", f"{unknown}; no cells to compare with the training cells' ({exc})")
    median = statistics.median(areas) if areas else None
    warning = scale_warning(median, len(areas), training)
    if warning:
        return Check("scale", "WARN", f"{unknown}; {warning}")  # the warning says what to do
    if median is None or len(areas) < MIN_RIG_CELLS:
        return Check("scale", "SKIP", f"{unknown}; too few cells in {config.database_path} to compare ({len(areas)})")
    return Check(
        "scale",
        "PASS",
        f"{unknown}; the last {len(areas)} cells' median area {median:.0f} px is within {AREA_RATIO_WARN:g}x of the "
        f"training cells' {training:.0f} px",
    )


def state_dir_check(state: Path) -> Check:
    """Whether `run` can write the state directory, or make it. Asked of the file system's
    permissions only: doctor runs anywhere (a desktop's ./var is relative to where it runs)
    and must not leave a folder or a probe file behind."""
    fix = "run as the service user, or set state_dir to a writable folder"
    if state.exists():
        if not state.is_dir():
            return Check("state_dir", "FAIL", f"{state} is not a folder", fix)
        if not os.access(state, os.W_OK | os.X_OK):
            return Check("state_dir", "FAIL", f"{state.absolute()} is not writable by this user", fix)
        return Check("state_dir", "PASS", f"{state.absolute()} is writable")
    parent = nearest_existing(state)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Check("state_dir", "FAIL", f"{state.absolute()} does not exist and {parent} is not writable", fix)
    return Check("state_dir", "PASS", f"{state.absolute()} does not exist yet; `run` will make it (in {parent})")


def camera_checks(config, args: argparse.Namespace, camera_probe: Callable[[], tuple[bool, str]] | None) -> list[Check]:
    """Is a camera listed; with --capture, what its frames look like."""
    if config.source.kind != "picamera2":
        return [Check("camera", "SKIP", f"source.kind is {config.source.kind!r}")]
    from edge.capture.picamera import camera_present

    found, detail = (camera_probe or camera_present)()
    if not found and (machine := not_a_pi()):
        # A desktop (checking a model, a config, the state folder) has no Pi camera to find.
        return [Check("camera", "SKIP", f"not a Raspberry Pi ({machine}): the camera is checked on the rig ({detail})")]
    fix = (
        "sudo apt install python3-picamera2 (venv made with --system-site-packages); check the ribbon "
        "cable and `rpicam-hello --list-cameras`; the service user must be in the video group"
    )
    checks = [Check("camera", "PASS" if found else "FAIL", detail, fix)]
    if found and getattr(args, "capture", 0):
        checks.extend(capture_checks(config, args.capture, args.focus, getattr(args, "live", False)))
    return checks


# The board's name on a Raspberry Pi ("Raspberry Pi 4 Model B Rev 1.5"); absent on a desktop.
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def not_a_pi() -> str | None:
    """What this machine is when it is no Raspberry Pi (None on a Pi)."""
    try:
        model = DEVICE_TREE_MODEL.read_text(errors="replace").strip("\0 \n")
    except OSError:
        return f"{platform.machine()} {platform.system()}, no {DEVICE_TREE_MODEL}"
    return None if "Raspberry Pi" in model else model


def capture_checks(config, frames: int, focus: bool, live: bool = False) -> list[Check]:
    """`--capture N`: real frames through the service's own camera code, measured."""
    from edge.capture.base import SourceError
    from edge.capture.camera_setup import CameraSettingsRejected
    from edge.commands.camera_check import capture_problem, capture_report

    try:
        report = capture_report(config, frames, focus, live)
    except (SourceError, CameraSettingsRejected) as exc:
        return [Check("capture", "FAIL", str(exc), capture_problem(exc))]
    checks = [Check("capture", "PASS", line) for line in report.lines]
    if report.live_problem:
        fix = "log in over ssh (pam_systemd sets $XDG_RUNTIME_DIR), or free the path named"
        checks.append(Check("live", "WARN", report.live_problem, fix))
    checks += [Check("exposure", "FAIL", problem, "see above") for problem in report.problems]
    return checks


def doctor(args: argparse.Namespace) -> int:
    if args.focus and not args.capture:
        raise UsageError("--focus needs --capture N (the frames to judge focus by)")
    if args.live and not args.capture:
        raise UsageError("--live needs --capture N (it serves the frames doctor takes)")
    checks = run_checks(args)
    for check in checks:
        print(check.line())
    failed = sum(check.outcome == "FAIL" for check in checks)
    print(f"{len(checks)} checks: {failed} failed" if failed else f"{len(checks)} checks: all passed or skipped")
    return 1 if failed else 0
