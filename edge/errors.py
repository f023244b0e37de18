"""The exit statuses of `metascope` and `metascope-train`, and the one exception family that
carries them: every error a command reports on purpose is a MetascopeError whose
``exit_code`` says how it ends the process; anything else is a bug and keeps its traceback.
README.md has the table, with what systemd does about each.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # some input failed (each named) or the command could not do its job; a crash
    USAGE = 2  # bad arguments, config key or model: systemd does not restart (RestartPreventExitStatus)
    SOURCE_FAILED = 3  # run: the camera failed, returned garbage or stalled repeatedly (restarted)
    PIPELINE_FAILED = 4  # run: frames kept failing (restarted)
    ENVIRONMENT = 5  # run: the state directory is missing, unwritable or its database unusable (restarted)
    EXPORT_REFUSED = 6  # metascope-train: the int8 model disagreed with the float one (nothing was written)


class MetascopeError(Exception):
    """An error a command reports as one line, ending with ``exit_code``."""

    exit_code: int = ExitCode.FAILED


class UsageError(MetascopeError):
    """Bad arguments, configuration or model: the user must change something."""

    exit_code = ExitCode.USAGE


class CommandError(MetascopeError):
    """The command could not do its job for a reason outside its arguments (no database...)."""

    exit_code = ExitCode.FAILED


class EnvironmentProblem(MetascopeError):
    """The machine is not ready (state disk missing or unwritable): worth retrying later."""

    exit_code = ExitCode.ENVIRONMENT


class ModelError(UsageError):
    """Base class for every problem with a model or its card (exit 2: an unusable model)."""
