"""The exit statuses of `metascope`, `metascope-train` and the deploy scripts, and the one
exception family that carries them: every error a command reports on purpose is a
MetascopeError whose ``exit_code`` says how it ends the process; anything else is a bug and
keeps its traceback.
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
    # metascope-train: the model was refused, nothing written at --out: its int8 form disagreed with the float
    # one, or a held-out group scored below --min-group-auc
    EXPORT_REFUSED = 6
    # deploy/: pull.sh, push.sh, install.sh and pull_merge.py run where edge may not import, so each
    # keeps a copy of the statuses it uses, by these names (EXIT_UNREACHABLE=7); tests/test_exit_codes.py
    # holds the copies to this table.
    UNREACHABLE = 7  # pull.sh, push.sh: the Pi cannot be reached over ssh, or the connection was lost
    NOT_INSTALLED = 8  # pull.sh: metascope is not installed on the Pi
    BAD_EXPORT = 9  # pull.sh: the Pi's export or status failed or sent something unusable (nothing changed here)
    COPY_FAILED = 10  # pull.sh: copying the Pi's snapshots or crops failed (the rows were pulled)
    # run: the results database is one this metascope must not write (a newer schema, or a trigger,
    # view or table no metascope makes): left untouched; systemd does not restart (RestartPreventExitStatus)
    DATABASE_REFUSED = 11
    PULL_TARGET_UNUSABLE = 12  # pull.sh: the pull's destination cannot be used (named; nothing changed there)


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


class DatabaseRefused(MetascopeError):
    """The results database must not be written by this metascope: retrying cannot change that."""

    exit_code = ExitCode.DATABASE_REFUSED


class ModelError(UsageError):
    """Base class for every problem with a model or its card (exit 2: an unusable model)."""
