"""Typed errors. Each message says what went wrong *and* what the user can do.

The CLI turns any `MprnetError` into one stderr line and `exit_code`; anything
else is a bug and gets a traceback.
"""

from __future__ import annotations

import errno

#: errno values that mean "the disk (or the user's quota) is full".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class MprnetError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code: int = 1


class UsageError(MprnetError):
    """Bad option values or combinations (exit 2, like a parsing error)."""

    exit_code = 2


class InputError(MprnetError):
    """An input file is missing, unreadable, not an image or too large."""


class ImageTooLargeError(InputError):
    """An image has more pixels than --max-pixels allows (a decompression bomb, or a huge scan)."""


class OutputError(MprnetError):
    """The output cannot be written (exists, no space, no permission)."""


class OutputExistsError(OutputError):
    """The output exists and --overwrite was not given."""


class NonFiniteOutputError(MprnetError):
    """The network produced NaN or infinite values (damaged weights, 16-bit overflow)."""


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


class ClusterError(MprnetError):
    """The Ray cluster cannot run the job (too few resources, a job-level Ray failure)."""


class BackendError(MprnetError):
    """An optional inference engine is missing or cannot run this network."""


class OutOfMemoryError(MprnetError):
    """Not enough memory even at the smallest tile size."""


def describe_os_error(exc: OSError) -> str:
    """What an OSError means for a user who writes a file, and what to do about it."""
    code = exc.errno
    if code in DISK_FULL_ERRNOS:
        return "not enough disk space; free some space or write elsewhere"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a folder you can write to"
    if code == errno.EROFS:
        return "the file system is read-only; write elsewhere"
    text = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    return f"cannot write ({text})"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (batch schedulers, `timeout`, systemd, Kubernetes, a closed
    terminal or ssh session), handled exactly like Ctrl-C: the write in progress finishes,
    finished outputs are reported, then the summary. A KeyboardInterrupt so that every
    Ctrl-C path covers it; its own exit code (128 + the signal's number, the shell's
    convention: 143 for SIGTERM, 129 for SIGHUP) tells them apart."""

    exit_code = 143
    signal_name = "SIGTERM"
    received = False  # set by the handler: the exit code stays 128 + N on every path


def raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP handler: raise `Terminated` in the main thread, as SIGINT raises
    KeyboardInterrupt."""
    import signal

    Terminated.received = True
    Terminated.exit_code = 128 + signum
    Terminated.signal_name = signal.Signals(signum).name
    raise Terminated
