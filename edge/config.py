"""The service's one configuration file: TOML, read with the standard library, checked at start.

Every key is optional; the defaults serve a typical rig. An unknown key or a bad value is a
ConfigError whose message names the file and the key (`metascope run` exits 2 on it).
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge.cells.detect_settings import CLUSTER_RULES, DetectSettings
from edge.classify.interpreter import INTERPRETER_NAMES, MAX_THREADS
from edge.errors import UsageError
from edge.paths import read_regular_file

SYSTEM_CONFIG = Path("/etc/metascope/metascope.toml")
SYSTEM_STATE_DIR = Path("/var/lib/metascope")
DESKTOP_STATE_DIR = "var"  # relative: the folder a desktop command runs in (a checkout's ./var)
DATABASE_NAME = "metascope.db"
STATUS_NAME = "status.json"
SNAPSHOT_DIR_NAME = "snapshots"
CROP_DIR_NAME = "crops"
MAX_CONFIG_BYTES = 1 << 20  # a real config is a few kB; a bigger file is a mistake or an attack


# Where frames come from (edge/capture/: picamera.py, synthetic.py, replay.py, still_field.py, composed.py).
SOURCE_KINDS = ("picamera2", "synthetic", "replay", "still", "composed")


class ConfigError(UsageError, ValueError):
    """A configuration problem; the message names the key (exit 2: never retried)."""


def default_state_dir() -> str:
    """systemd's $STATE_DIRECTORY, else /var/lib/metascope when it exists (a Pi), else ./var."""
    from_systemd = os.environ.get("STATE_DIRECTORY")
    if from_systemd:
        return from_systemd.split(":")[0]
    if SYSTEM_STATE_DIR.is_dir():
        return str(SYSTEM_STATE_DIR)
    return DESKTOP_STATE_DIR


def option(
    default: Any, low: float | None = None, high: float | None = None, choices: tuple[Any, ...] | None = None
) -> Any:
    """A setting's default and what values it accepts (bounds apply to each item of a list)."""
    return field(default=default, metadata={"low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class SourceConfig:
    kind: str = option("picamera2", choices=SOURCE_KINDS)
    width: int = option(640, 32, 4096)
    height: int = option(480, 32, 4096)
    fps: float = option(0.0, 0.0, 240.0)  # replay/synthetic pacing; 0 = as fast as the loop takes them
    timeout_s: float = option(2.0, 0.05, 60.0)
    max_failures: int = option(5, 1, 1000)
    replay_path: str = option("")
    replay_loop: bool = option(False)
    replay_follow: bool = option(False)  # at the end, wait for files added to the folder
    synthetic_cells: int = option(20, 0, 1000)
    synthetic_seed: int = option(0, 0, 2**31 - 1)
    still_move_every: int = option(0, 0, 10_000_000)  # kind "still": frames between stage moves; 0 = never
    still_divide_every: int = option(0, 0, 10_000_000)  # kind "still": frames between cell divisions; 0 = never
    composed_path: str = option("")  # kind "composed": a folder of masked single-cell crops
    composed_repeats: int = option(24, 1, 100_000)  # kind "composed": frames each field is held still
    composed_pair_fraction: float = option(0.0, 0.0, 1.0)  # kind "composed": objects that are two touching cells
    composed_triple_fraction: float = option(0.0, 0.0, 1.0)  # kind "composed": objects of three touching cells


@dataclass(frozen=True)
class CameraConfig:
    exposure_us: int = option(10_000, 1, 10_000_000)
    analogue_gain: float = option(1.0, 1.0, 64.0)
    # red, blue; white balance stays locked
    colour_gains: list = field(default_factory=lambda: [1.0, 1.0], metadata={"low": 0.0, "high": 32.0})
    frame_rate: float = option(10.0, 0.1, 120.0)
    # dioptres (1 / distance in m; 0 = infinity) for a camera with a focus motor (Camera Module
    # 3); -1 = leave it to the camera (which moves the lens to its tuning's default at each start)
    lens_position: float = option(-1.0, -1.0, 32.0)
    # "" = the sensor's own libcamera tuning file; else a name in libcamera's folders or a path
    tuning_file: str = option("")


@dataclass(frozen=True)
class ModelConfig:
    # "" = the default model (METASCOPE_MODEL, models/, /opt/metascope/models); a bare NAME is
    # looked up there too (e.g. "mda231-pc3-fast"); else a path to NAME.tflite.
    path: str = option("")
    threads: int = option(0, 0, MAX_THREADS)  # 0 = every core
    threshold: float = option(0.0, 0.0, 1.0)  # 0 = the model card's threshold
    interpreter: str = option("", choices=("", *INTERPRETER_NAMES))


@dataclass(frozen=True)
class PipelineConfig:
    mode: str = option("cells", choices=("cells", "whole"))
    budget_ms: float = option(0.0, 0.0, 60_000.0)  # 0 = from the model's card (edge.service.pipeline.budget_ms)
    pixel_size_um: float = option(0.0, 0.0, 1000.0)  # the rig's um per pixel; 0 = the model's scale
    whole_window_px: int = option(0, 0, 8192)  # mode "whole": window side; 0 = the model's window


@dataclass(frozen=True)
class DetectConfig:
    min_area_px: int = option(DetectSettings.min_area_px, 1, 10_000_000)
    max_area_px: int = option(DetectSettings.max_area_px, 1, 100_000_000)
    cluster_rule: str = option(DetectSettings.cluster_rule, choices=CLUSTER_RULES)
    cluster_flag_rate: float = option(DetectSettings.cluster_flag_rate, 0.0, 1.0)  # learnt rule's threshold
    # learnt: 0 = no size beyond the rule's; shape: 0 = from the model card, a multiple of its
    # training cells' median area (edge/cells/scale.py), or 6000 for a card that records none
    cluster_area_px: int = option(0, 0, 100_000_000)
    min_solidity: float = option(DetectSettings.min_solidity, 0.0, 1.0)
    noise_factor: float = option(DetectSettings.noise_factor, 0.5, 100.0)
    min_contrast: float = option(DetectSettings.min_contrast, 0.0, 255.0)
    skip_border: bool = option(DetectSettings.skip_border)
    downscale: int = option(DetectSettings.downscale, 1, 4)

    def settings(self, cluster_area_px: int = 0, reference_area_px: float = 0.0) -> DetectSettings:
        """Detection's settings; ``cluster_area_px`` stands in for a cluster_area_px of 0, and
        ``reference_area_px`` is a typical single cell's area on this rig (edge.cells.scale.detect_settings)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["cluster_area_px"] = self.cluster_area_px or cluster_area_px
        return DetectSettings(**values, reference_area_px=reference_area_px)


@dataclass(frozen=True)
class TrackingConfig:
    """edge/cells/tracking.py and edge/cells/views.py; the defaults and why are in the README."""

    views_per_cell: int = option(8, 1, 64)  # K: model calls averaged into a cell's call
    view_interval_frames: int = option(3, 1, 100_000)  # frames at least between a cell's views
    lost_after_frames: int = option(10, 1, 100_000)  # N: a track unmatched this many frames in a row ends
    max_match_px: float = option(20.0, 0.5, 10_000.0)  # a cell moves less than this between frames
    new_field_fraction: float = option(0.3, 0.0, 1.0)  # a frame matching less than this is a new field
    reclassify_area_change: float = option(0.25, 0.01, 100.0)  # area change (fraction) that re-classifies


@dataclass(frozen=True)
class StoreConfig:
    commit_interval_s: float = option(1.0, 0.0, 60.0)
    retention_days: float = option(90.0, 0.0, 36_500.0)  # 0 = keep forever
    max_db_mb: float = option(2048.0, 0.0, 10_000_000.0)  # 0 = no size cap
    min_free_mb: float = option(100.0, 0.0, 10_000_000.0)  # below this, results are not written


@dataclass(frozen=True)
class SnapshotConfig:
    every_n_frames: int = option(600, 0, 10_000_000)  # 0 = none on a schedule
    on_positive: bool = option(False)
    on_cluster: bool = option(False)
    max_mb: float = option(500.0, 0.0, 10_000_000.0)
    min_free_mb: float = option(1024.0, 0.0, 10_000_000.0)  # below this, snapshots stop first
    quality: int = option(85, 1, 95)


@dataclass(frozen=True)
class CropConfig:
    """The masked crop of each tracked cell (edge/record/crops.py): for the report and for retraining."""

    max_mb: float = option(200.0, 0.0, 10_000_000.0)  # size cap of crops/, oldest deleted first; 0 = none
    min_free_mb: float = option(1024.0, 0.0, 10_000_000.0)  # below this, crops stop (before results)


@dataclass(frozen=True)
class ServiceConfig:
    summary_interval_s: float = option(60.0, 1.0, 86_400.0)
    status_interval_s: float = option(2.0, 0.1, 3600.0)


SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "camera": CameraConfig,
    "model": ModelConfig,
    "pipeline": PipelineConfig,
    "detect": DetectConfig,
    "tracking": TrackingConfig,
    "store": StoreConfig,
    "snapshots": SnapshotConfig,
    "crops": CropConfig,
    "service": ServiceConfig,
}


@dataclass(frozen=True)
class Config:
    state_dir: str = field(default_factory=default_state_dir)
    source: SourceConfig = field(default_factory=SourceConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    origin: str = "built-in defaults"  # the file it came from, for messages and the runs table

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def database_path(self) -> Path:
        return self.state_path / DATABASE_NAME

    @property
    def status_path(self) -> Path:
        return self.state_path / STATUS_NAME

    @property
    def snapshot_dir(self) -> Path:
        return self.state_path / SNAPSHOT_DIR_NAME

    @property
    def crop_dir(self) -> Path:
        return self.state_path / CROP_DIR_NAME

    def as_dict(self) -> dict[str, Any]:
        """The effective settings, as a TOML file would spell them (stored with each run)."""
        result: dict[str, Any] = {"state_dir": self.state_dir}
        for name in SECTIONS:
            section = getattr(self, name)
            result[name] = {f.name: getattr(section, f.name) for f in fields(section)}
        return result

    def with_overrides(self, section: str, **values: Any) -> Config:
        return replace(self, **{section: replace(getattr(self, section), **values)})


_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list}


def _type_name(kind: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list"}[kind]


def _check_value(key: str, value: Any, spec: Any) -> Any:
    kind = _TYPES[spec.type] if isinstance(spec.type, str) else spec.type  # annotations are strings here
    rule = spec.metadata
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list:
        default = spec.default_factory()
        if not isinstance(value, list) or len(value) != len(default):
            raise ConfigError(f"{key}: must be a list of {len(default)} numbers, got {value!r}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise ConfigError(f"{key}: must be a list of {len(default)} numbers, got {value!r}")
        value = [float(item) for item in value]
        items = value
    else:
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise ConfigError(f"{key}: must be {_type_name(kind)}, got {value!r}")
        _check_no_nul(key, value)
        items = [value]
    if rule.get("choices") and value not in rule["choices"]:
        choices = ", ".join(repr(c) for c in rule["choices"] if c != "") or "none"
        raise ConfigError(f"{key}: must be one of {choices}, got {value!r}")
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            # nan compares false with every bound, so it would pass them all
            raise ConfigError(f"{key}: must be a finite number, got {item!r}")
        if rule.get("low") is not None and item < rule["low"]:
            raise ConfigError(f"{key}: must be at least {rule['low']:g}, got {item!r}")
        if rule.get("high") is not None and item > rule["high"]:
            raise ConfigError(f"{key}: must be at most {rule['high']:g}, got {item!r}")
    return value


def _check_no_nul(key: str, value: Any) -> None:
    """Every string setting is a path or a name: the operating system cuts a path at a NUL (or
    refuses it), so one would name another file than the one written, or fail deep in a stage."""
    if isinstance(value, str) and "\0" in value:
        raise ConfigError(f"{key}: must not contain a NUL byte, got {value!r}")


def _build_section(name: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}]: must be a table of settings, got {table!r}")
    specs = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in specs:
            known = ", ".join(specs)
            raise ConfigError(f"{name}.{key}: unknown key (known keys in [{name}]: {known})")
        values[key] = _check_value(f"{name}.{key}", value, specs[key])
    return cls(**values)


def config_from_dict(data: dict[str, Any], origin: str = "config") -> Config:
    """Validate a parsed TOML document into a Config (errors name the key)."""
    values: dict[str, Any] = {"origin": origin}
    for key, value in data.items():
        if key == "state_dir":
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"state_dir: must be a non-empty path string, got {value!r}")
            _check_no_nul("state_dir", value)
            values["state_dir"] = value
        elif key in SECTIONS:
            values[key] = _build_section(key, SECTIONS[key], value)
        else:
            known = ", ".join(["state_dir", *(f"[{s}]" for s in SECTIONS)])
            raise ConfigError(f"{key}: unknown key (known: {known})")
    config = Config(**values)
    detect = config.detect
    if detect.min_area_px > detect.max_area_px:
        raise ConfigError(
            f"detect.min_area_px: {detect.min_area_px} is larger than detect.max_area_px {detect.max_area_px}"
        )
    if config.model.threshold != 0.0 and not 0.0 < config.model.threshold < 1.0:
        raise ConfigError(f"model.threshold: must be between 0 and 1, got {config.model.threshold}")
    if config.source.kind == "picamera2":
        _check_camera(config)
    return config


def _check_camera(config: Config) -> None:
    """What picamera2 or libcamera would refuse, or silently change, about the camera settings."""
    source, camera = config.source, config.camera
    frame_s = 1.0 / camera.frame_rate
    if source.timeout_s < 2 * frame_s:
        raise ConfigError(
            f"source.timeout_s: {source.timeout_s:g} s is shorter than two frames at camera.frame_rate "
            f"{camera.frame_rate:g} ({2 * frame_s:g} s): every capture would time out"
        )
    for key in ("width", "height"):
        value = getattr(source, key)
        if value % 2:  # picamera2 check_stream_config: "width and height should be even"
            raise ConfigError(f"source.{key}: the camera's YUV420 stream needs an even number, got {value}")
    if 0.0 in camera.colour_gains:
        raise ConfigError(
            f"camera.colour_gains: 0 turns automatic white balance back on in libcamera; must be above 0, "
            f"got {camera.colour_gains}"
        )
    period_us = 1_000_000 / camera.frame_rate
    if camera.exposure_us > period_us:
        raise ConfigError(
            f"camera.exposure_us: {camera.exposure_us} us is longer than a frame at camera.frame_rate "
            f"{camera.frame_rate:g} ({period_us:.0f} us); libcamera would shorten it silently"
        )
    if camera.lens_position != -1.0 and camera.lens_position < 0.0:
        raise ConfigError(
            f"camera.lens_position: dioptres must be 0 or more (or -1: leave it), got {camera.lens_position}"
        )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """The given file; else /etc/metascope/metascope.toml when present; else the defaults."""
    if path is None:
        if not SYSTEM_CONFIG.is_file():
            return Config()
        path = SYSTEM_CONFIG
    path = Path(path)
    try:
        text = read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{path}: not a usable config: arrays or tables nested too deeply") from None
    try:
        return config_from_dict(data, origin=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
