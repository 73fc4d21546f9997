"""Atomic writes: the final name holds the complete file or nothing new.

Encode fully in memory, write a hidden `.<name>.<random>.tmp` in the target folder, fsync,
then link/replace it into place. On any failure, KeyboardInterrupt included, the temporary
file is removed and no partial output exists.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Final

from mprnet_cli.errors import OutputError, OutputExistsError, describe_os_error


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically (checkpoints, exported weights)."""
    write_atomic(Path(path), data, overwrite=True)


def write_atomic(target: Path, data: bytes, *, overwrite: bool) -> None:
    """Put `data` at `target` atomically; any failure is an `OutputError` naming the target."""
    try:
        _atomic_write(target, data, overwrite=overwrite)
    except OutputError:
        raise
    except OSError as exc:
        raise _output_error(target, exc) from None


def _atomic_write(target: Path, data: bytes, *, overwrite: bool) -> None:
    folder = target.parent
    tmp, fd = create_temp(folder, target.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            with contextlib.suppress(OSError):  # keep the replaced file's permissions
                tmp.chmod(stat.S_IMODE(target.stat().st_mode))
            try:
                tmp.replace(target)
            except FileNotFoundError as exc:
                raise _vanished(tmp, target, exc) from None
        else:
            _link_no_clobber(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


#: Bytes a temporary file's name adds to its output's: "." before, ".<8 hex>.tmp" after.
TEMP_NAME_EXTRA: Final = 14


def create_temp(folder: Path, name: str) -> tuple[Path, int]:
    """Hidden temp file next to the target (same filesystem, so the rename is atomic).

    Created with mode 0o666 so the umask applies, unlike `tempfile.mkstemp`'s 0o600.
    """
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        return tmp, fd
    raise OSError(errno.EEXIST, "could not create a temporary file")


def check_writable_folder(folder: Path, *, create: bool = False) -> None:
    """Raise `OutputError` unless a file can be created in `folder` (made first if `create`).

    A real probe (create and remove a temporary file), not `os.access`: root passes
    permission checks that /proc, read-only mounts and full quotas still refuse. Run before
    an image is restored, so an unwritable output costs no restore time."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise OutputError(f"{folder}: the output folder does not exist; create it first")
        tmp, fd = create_temp(folder, "mprnet-write-check")
        os.close(fd)
        tmp.unlink()
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            reason = "cannot create this folder (a part of its path is missing or not a folder)"
        else:
            reason = describe_os_error(exc)
        if ";" not in reason:  # describe_os_error's own advice ("write elsewhere") suffices
            reason += "; choose another -o"
        raise OutputError(f"{folder}: {reason}") from None


_TEMP_NAME: Final = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp")


def temp_target(name: str) -> str | None:
    """The output name a `write_image` temporary file (`create_temp`) was for, else None.

    Only a killed process (SIGKILL, power loss) leaves one behind; batch runs use this to
    remove the stale ones of the outputs they handle, so a resumed run leaves no debris. A
    fresh one may belong to a live writer: see `mprnet_cli.jobs.STALE_TEMP_SECONDS`.
    """
    match = _TEMP_NAME.fullmatch(name)
    return match["target"] if match else None


_NO_HARDLINK_ERRNOS: Final = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
)


def _link_no_clobber(tmp: Path, target: Path) -> None:
    """Move tmp into place only if target does not exist, without a check-then-replace race."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputExistsError(
            f"{target} already exists; pass --overwrite to replace it"
        ) from None
    except FileNotFoundError as exc:
        raise _vanished(tmp, target, exc) from None
    except OSError as exc:  # no hard links here (FAT, some network shares): best effort
        if exc.errno not in _NO_HARDLINK_ERRNOS:
            raise
        if target.exists():
            raise OutputExistsError(
                f"{target} already exists; pass --overwrite to replace it"
            ) from None
        try:
            tmp.replace(target)
        except FileNotFoundError as exc2:
            raise _vanished(tmp, target, exc2) from None
        return
    with contextlib.suppress(FileNotFoundError):  # the output is in place: that is what counts
        tmp.unlink()


def _vanished(tmp: Path, target: Path, exc: OSError) -> OutputError:
    """ENOENT when moving the temp into place: the folder went away, or just the temp file.

    The latter happens when something else deleted it meanwhile (a cleanup tool, or a batch
    run of an older mprnet that removed every temp file of the outputs it reached).
    """
    if not tmp.parent.is_dir():
        return _output_error(target, exc)
    return OutputError(
        f"{target}: its temporary file {tmp.name} was deleted by another program while it "
        "was being written; nothing was written, run again"
    )


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open folders)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _output_error(target: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOENT:
        return OutputError(f"{target}: the folder {target.parent} does not exist; create it first")
    return OutputError(f"{target}: {describe_os_error(exc)}")
