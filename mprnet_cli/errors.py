"""Typed errors. Each message says what went wrong *and* what the user can do.

The CLI turns any `MprnetError` into one stderr line and `exit_code`; anything
else is a bug and gets a traceback.
"""

from __future__ import annotations


class MprnetError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code: int = 1


class UsageError(MprnetError):
    """Bad option values or combinations (exit 2, like a parsing error)."""

    exit_code = 2


class InputError(MprnetError):
    """An input file is missing, unreadable, not an image or too large."""


class OutputError(MprnetError):
    """The output cannot be written (exists, no space, no permission)."""


class OutputExistsError(OutputError):
    """The output exists and --overwrite was not given."""


class CheckpointError(MprnetError):
    """A weights file is not a loadable MPRNet checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would need to run code to load; we refuse it."""


class WeightsError(MprnetError):
    """Weights cannot be found, downloaded or verified."""


class OfflineError(WeightsError):
    """The published weights are needed but not cached and the Hub is unreachable."""


class IntegrityError(WeightsError):
    """A weights file does not match its recorded size or sha256."""


class DeviceError(MprnetError):
    """The requested device does not exist or cannot be used."""


class BackendError(MprnetError):
    """An optional inference engine is missing or cannot run this network."""


class OutOfMemoryError(MprnetError):
    """Not enough memory even at the smallest tile size."""
