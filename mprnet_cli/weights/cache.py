"""Checking weights files and keeping what mprnet learnt about them in its cache.

A file's hash and network are remembered per version of the file, and a checkpoint fetched
by hand is imported into the cache after the checks a download gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat as stat_module
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mprnet_cli.errors import CheckpointError, IntegrityError, WeightsError
from mprnet_cli.host.paths import cache_root
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.tasks import Task
from mprnet_cli.weights.registry import ResolvedWeights, Source, registry


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remembered(note: str, path: Path, compute: Callable[[], str]) -> str:
    """A fact about a file (its hash, its network), computed once per version of the file.

    Hashing an 80 MB checkpoint or reading its shapes costs a fraction of a
    second, so the answer is kept in a note in mprnet's cache, keyed by the
    file's size, mtime, inode and ctime: any change to the file makes it computed
    again, including a same-size swap with its mtime restored (`cp -p`, `rsync -t`),
    which gets a new inode or ctime (ctime cannot be set back from user space).
    """
    stat = path.stat()
    store = cache_root() / note
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
    db = read_store(store)
    hit = db.get(key)
    n = len(stamp)
    if isinstance(hit, list) and len(hit) == n + 1 and hit[:n] == stamp and isinstance(hit[n], str):
        return str(hit[n])
    value = compute()
    db[key] = [*stamp, value]
    write_store(store, db)  # if it cannot be written, the next run only computes again
    return value


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed only when the file changed since the last time."""
    return remembered("verified.json", path, lambda: sha256_file(path))


def verify_file(path: Path, sha256: str | None, size: int | None = None) -> None:
    """Raise `IntegrityError` unless the file has the expected size and hash."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(
            f"{path} has {actual_size} bytes, expected {size}: the download is incomplete or "
            "the file was altered; delete it and run `mprnet weights download --force`"
        )
    if sha256 is None:
        return
    actual = file_sha256(path)
    if actual != sha256:
        raise IntegrityError(
            f"{path} is corrupt or altered (sha256 {actual[:12]}…, expected {sha256[:12]}…); "
            "run `mprnet weights download --force` to fetch it again"
        )


def read_store(path: Path) -> dict[str, Any]:
    """One of mprnet's small JSON notes in its cache; missing or unreadable: empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_store(path: Path, data: dict[str, Any]) -> bool:
    """Replace a JSON note atomically; False if the cache is read-only (most notes are hints)."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        # The cache may be read-only or not a folder at all (MPRNET_CACHE naming a file):
        # removing the temp file fails the same way, and a note is only a hint.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True


def describe(config: MPRNetConfig) -> str:
    return (
        f"n_feat {config.n_feat}, scale_unetfeats {config.scale_unetfeats}, "
        f"scale_orsnetfeats {config.scale_orsnetfeats}, {config.num_cab} CABs"
    )


def network_of(path: Path) -> MPRNetConfig:
    """The network a checkpoint holds, from its tensor shapes (remembered per file version)."""

    def detect() -> str:
        from mprnet_cli.model.checkpoint import read_checkpoint

        return json.dumps(read_checkpoint(path).config.to_dict(), sort_keys=True)

    return MPRNetConfig.from_dict(json.loads(remembered("networks.json", path, detect)))


def check_network(task: Task, path: Path, label: str) -> None:
    """Refuse a file that is not the task's published network, saying what it holds instead.

    A file of another task under the right name would otherwise restore with
    the wrong network and no error at all.
    """
    entries = registry()
    expected = entries[task].published.config
    found = network_of(path)
    if found == expected:
        return
    other = next((t for t, e in entries.items() if e.published.config == found), None)
    what = (
        f"the published {other.value} network"
        if other is not None
        else f"a network of {describe(found)}"
    )
    raise CheckpointError(
        f"{label} holds {what}, not the published {task.value} network ({describe(expected)})"
    )


def imports_path() -> Path:
    return cache_root() / "imported.json"


def imported_file(task: Task) -> ResolvedWeights | None:
    """The file imported by hand for a task, checked as it was on import; None if there is none."""
    record = read_store(imports_path()).get(task.value)
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        return None
    path = Path(record["path"])
    if not path.is_file():
        return None
    verify_file(path, record.get("sha256"))
    check_network(task, path, str(path))
    entry = registry()[task]
    return ResolvedWeights(path, Source.IMPORTED, task, entry.published.config)


def import_file(task: Task, file: str | os.PathLike[str]) -> Path:
    """Put a checkpoint fetched by hand into mprnet's cache, after the checks a download gets.

    Later runs then use it like a download (after any cached Hub source).
    """
    src = Path(file).expanduser()
    check_regular_file(src)
    spec = registry()[task].published
    check_network(task, src, str(src))
    from mprnet_cli.model.checkpoint import check_weights, read_checkpoint

    check_weights(read_checkpoint(src))  # complete and finite: never keep NaN weights
    sha = sha256_file(src)
    pinned = {s.sha256 for s in spec.sources if s.sha256}
    if pinned and sha not in pinned:
        raise IntegrityError(
            f"{src}: its sha256 {sha[:12]}… matches none of the published {task.value} files "
            "the registry pins; fetch the file again"
        )
    folder = cache_root() / "imported" / task.value
    dest = folder / src.name
    tmp = folder / f".{src.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WeightsError(
            f"cannot copy {src} into the mprnet cache {cache_root()} "
            f"({exc.strerror or exc}); make it a writable folder or set MPRNET_CACHE to one"
        ) from exc
    records = read_store(imports_path())
    records[task.value] = {"path": str(dest), "sha256": sha, "from": str(src.resolve())}
    if not write_store(imports_path(), records):
        with contextlib.suppress(OSError):
            dest.unlink(missing_ok=True)
        raise WeightsError(
            f"cannot record the import in {imports_path()}; make the mprnet cache "
            "writable or set MPRNET_CACHE to a writable folder"
        )
    for old in folder.iterdir():  # an earlier import under another name is no longer used
        if old != dest and not old.name.startswith("."):
            old.unlink(missing_ok=True)
    return dest


_NOT_FILES = (
    (stat_module.S_ISCHR, "a character device"),
    (stat_module.S_ISBLK, "a block device"),
    (stat_module.S_ISFIFO, "a pipe (FIFO)"),
    (stat_module.S_ISSOCK, "a socket"),
)


def check_regular_file(path: Path) -> None:
    """A weights file must be a regular file: say what it is otherwise, not "not found"."""
    if path.is_dir():
        raise WeightsError(
            f"{path} is a folder; give the weights file in it (.pth, .pt or .safetensors)"
        )
    if path.is_file():
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        raise WeightsError(f"weights file not found: {path}") from None
    what = next((name for test, name in _NOT_FILES if test(mode)), "not a regular file")
    raise WeightsError(
        f"{path} is {what}, not a weights file; give a .pth, .pt or .safetensors file"
    )
