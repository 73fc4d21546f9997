"""Where weights come from: an explicit file, the Hub cache, a download, an import, the bundle.

Kept whole (~620 lines): each source is verified as it is resolved, one chain read top to bottom.

The registry (`weights/registry.json`) is data, not code, so pinning a new
revision, adding a checksum or another mirror is a one-line change; it is also
the one home of each published network's configuration. `MPRNET_REGISTRY`
points at another registry file (an internal mirror, or tests).

Resolution for a task when the user names no file (`--model auto`): the first
of the task's published sources found in the Hugging Face cache (no network
call), else a file imported by hand, else a download trying the sources in
order, else the bundled compact weights with one notice line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat as stat_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from mprnet_cli.choices import ModelChoice
from mprnet_cli.errors import (
    CheckpointError,
    IntegrityError,
    OfflineError,
    UsageError,
    WeightsError,
)
from mprnet_cli.hub import (
    CacheWriteError,
    HubFile,
    HubUnreachableError,
    RepoType,
    SourceUnavailableError,
    cached_file,
    fetch,
    hub_output,
    hub_reachable,
    hub_sha,
)
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.tasks import Task

Notify = Callable[[str], None]


class Source(str, Enum):
    FILE = "file"
    PUBLISHED = "published"
    IMPORTED = "imported"
    BUNDLED = "bundled"


@dataclass(frozen=True)
class License:
    name: str
    url: str
    short: str


@dataclass(frozen=True)
class PublishedWeights:
    """The authors' checkpoint for one task: its network and where copies live, in order."""

    task: Task
    sources: tuple[HubFile, ...]
    license: License
    config: MPRNetConfig
    # Measured peak bytes per input pixel, keyed "cpu_fp32", "cuda_bf16", ...
    memory_bytes_per_pixel: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BundledWeights:
    """Our own compact weights shipped in `weights/`."""

    task: Task
    file: str
    sha256: str
    config: MPRNetConfig
    license: License
    # One honest phrase from the model card, quoted when these stand in for the published ones.
    note: str = ""


@dataclass(frozen=True)
class TaskWeights:
    task: Task
    published: PublishedWeights
    bundled: BundledWeights | None


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on disk and where it came from."""

    path: Path
    source: Source
    task: Task | None
    config: MPRNetConfig | None = None


# --------------------------------------------------------------------------- registry


def weights_dir() -> Path:
    """The folder holding the registry and bundled weights (installed or in the repo)."""
    installed = Path(__file__).resolve().parent / "_weights"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "weights"


def registry_path() -> Path:
    override = os.environ.get("MPRNET_REGISTRY")
    return Path(override) if override else weights_dir() / "registry.json"


def _hub_file(data: Mapping[str, Any]) -> HubFile:
    return HubFile(
        repo=data["repo"],
        path=data["path"],
        repo_type=RepoType(data.get("repo_type", "model")),
        revision=data.get("revision"),
        sha256=data.get("sha256"),
        size=data.get("size"),
    )


@cache
def _load_registry(path: Path) -> dict[Task, TaskWeights]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        licenses = {
            k: License(v["name"], v["url"], v.get("short", k))
            for k, v in raw.get("licenses", {}).items()
        }
        out: dict[Task, TaskWeights] = {}
        for task in Task:
            p = raw["published"][task.value]
            published = PublishedWeights(
                task=task,
                sources=tuple(_hub_file(s) for s in p["sources"]),
                license=licenses[p["license"]],
                config=MPRNetConfig.from_dict(p["config"]),
                memory_bytes_per_pixel={
                    k: float(v) for k, v in p.get("memory_bytes_per_pixel", {}).items()
                },
            )
            if not published.sources:
                raise ValueError(f"{task.value} lists no published sources")
            b = raw.get("bundled", {}).get(task.value)
            bundled = None
            if b is not None:
                bundled = BundledWeights(
                    task=task,
                    file=b["file"],
                    sha256=b["sha256"],
                    config=MPRNetConfig.from_dict(b["config"]),
                    license=licenses[b["license"]],
                    note=b.get("note", ""),
                )
            out[task] = TaskWeights(task, published, bundled)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"weights registry {path} is unreadable or incomplete: {exc!r}") from exc
    return out


def registry() -> dict[Task, TaskWeights]:
    return _load_registry(registry_path())


def published_configs() -> dict[str, MPRNetConfig]:
    """Each task's published network, keyed by task name (benchmarks build these)."""
    return {task.value: entry.published.config for task, entry in registry().items()}


# --------------------------------------------------------------------------- verification


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """mprnet's own cache: `MPRNET_CACHE`, else `$XDG_CACHE_HOME/mprnet` or `~/.cache/mprnet`."""
    root = os.environ.get("MPRNET_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "mprnet"


def _remembered(note: str, path: Path, compute: Callable[[], str]) -> str:
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
    db = _read_store(store)
    hit = db.get(key)
    n = len(stamp)
    if isinstance(hit, list) and len(hit) == n + 1 and hit[:n] == stamp and isinstance(hit[n], str):
        return str(hit[n])
    value = compute()
    db[key] = [*stamp, value]
    _write_store(store, db)  # if it cannot be written, the next run only computes again
    return value


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed only when the file changed since the last time."""
    return _remembered("verified.json", path, lambda: sha256_file(path))


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


def _read_store(path: Path) -> dict[str, Any]:
    """One of mprnet's small JSON notes in its cache; missing or unreadable: empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_store(path: Path, data: dict[str, Any]) -> bool:
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


def _describe(config: MPRNetConfig) -> str:
    return (
        f"n_feat {config.n_feat}, scale_unetfeats {config.scale_unetfeats}, "
        f"scale_orsnetfeats {config.scale_orsnetfeats}, {config.num_cab} CABs"
    )


def network_of(path: Path) -> MPRNetConfig:
    """The network a checkpoint holds, from its tensor shapes (remembered per file version)."""

    def detect() -> str:
        from mprnet_cli.model.checkpoint import read_checkpoint

        return json.dumps(read_checkpoint(path).config.to_dict(), sort_keys=True)

    return MPRNetConfig.from_dict(json.loads(_remembered("networks.json", path, detect)))


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
        else f"a network of {_describe(found)}"
    )
    raise CheckpointError(
        f"{label} holds {what}, not the published {task.value} network ({_describe(expected)})"
    )


# --------------------------------------------------------------------------- published sources


def _source_problem(spec: PublishedWeights, source: HubFile, path: Path) -> str | None:
    """Why a file from a source is not the task's published checkpoint, or None if it is."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        return f"it has {size} bytes, the registry expects {source.size}"
    if source.sha256 is not None:
        actual = file_sha256(path)
        if actual != source.sha256:
            return f"its sha256 {actual[:12]}… is not the registry's {source.sha256[:12]}…"
    try:
        check_network(spec.task, path, source.path)
    except CheckpointError as exc:
        return str(exc)
    return None


def find_cached(spec: PublishedWeights) -> ResolvedWeights | None:
    """The first usable published file already here, in source order, else an imported one.

    A cached file that no longer matches the Hub's own hash is damaged and
    raises `IntegrityError`; one that is intact but not the right network was
    reported when downloaded and is passed over.
    """
    for source in spec.sources:
        path = cached_file(source)
        if path is None:
            continue
        verify_file(path, hub_sha(path))
        if _source_problem(spec, source, path) is None:
            return ResolvedWeights(path, Source.PUBLISHED, spec.task, spec.config)
    return imported_file(spec.task)


def download_published(
    spec: PublishedWeights,
    *,
    notify: Notify | None = None,
    force: bool = False,
    quiet: bool = False,
    source: int | None = None,
) -> ResolvedWeights:
    """Fetch the task's published checkpoint, trying its sources in order (or only `source`).

    A missing repository or file, a failed check or the wrong network moves on
    to the next source with one line through `notify`; an unreachable Hub stops
    at once (every source lives there).
    """
    count = len(spec.sources)
    if source is not None and not 1 <= source <= count:
        raise UsageError(f"--source must be between 1 and {count} for {spec.task.value}")
    if not hub_reachable():
        raise offline_error(spec.task)
    numbered = list(enumerate(spec.sources, 1))
    candidates = numbered if source is None else [numbered[source - 1]]
    if notify and all(cached_file(s) is None for _, s in candidates):
        notify(
            f"Downloading the published MPRNet {spec.task.value} weights. They are under "
            f"the {spec.license.name}: {spec.license.url}"
        )
    tried: list[str] = []
    with hub_output(quiet):
        for i, (n, hub_file) in enumerate(candidates):
            try:
                path = fetch(hub_file, force)
                verify_file(path, hub_sha(path))
                reason = _source_problem(spec, hub_file, path)
            except (SourceUnavailableError, IntegrityError, CheckpointError) as exc:
                reason = str(exc)
            except HubUnreachableError as exc:
                raise offline_error(spec.task) from exc
            except CacheWriteError as exc:
                raise WeightsError(
                    f"cannot store the download in the Hugging Face cache: {exc}; "
                    "check HF_HUB_CACHE and free space"
                ) from exc
            if reason is None:
                return ResolvedWeights(path, Source.PUBLISHED, spec.task, spec.config)
            tried.append(f"source {n} {hub_file.label}: {reason}")
            if notify:
                more = "; trying the next source" if i + 1 < len(candidates) else ""
                notify(f"{tried[-1]}{more}")
    raise WeightsError(
        f"none of the published {spec.task.value} weights could be used ({'; '.join(tried)}). "
        f"Fetch the file by hand (docs/weights.md) and run `mprnet weights import "
        f"{spec.task.value} FILE`, pass a file with --weights FILE, or use --model bundled"
    )


def offline_error(task: Task) -> OfflineError:
    return OfflineError(
        f"the published {task.value} weights are not cached and the Hugging Face Hub cannot be "
        f"reached. Connect once and run `mprnet weights download {task.value}`, pass a file "
        "with --weights FILE, or use --model bundled"
    )


# --------------------------------------------------------------------------- import


def _imports_path() -> Path:
    return cache_root() / "imported.json"


def imported_file(task: Task) -> ResolvedWeights | None:
    """The file imported by hand for a task, checked as it was on import; None if there is none."""
    record = _read_store(_imports_path()).get(task.value)
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
    _check_regular_file(src)
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
    records = _read_store(_imports_path())
    records[task.value] = {"path": str(dest), "sha256": sha, "from": str(src.resolve())}
    if not _write_store(_imports_path(), records):
        with contextlib.suppress(OSError):
            dest.unlink(missing_ok=True)
        raise WeightsError(
            f"cannot record the import in {_imports_path()}; make the mprnet cache "
            "writable or set MPRNET_CACHE to a writable folder"
        )
    for old in folder.iterdir():  # an earlier import under another name is no longer used
        if old != dest and not old.name.startswith("."):
            old.unlink(missing_ok=True)
    return dest


# --------------------------------------------------------------------------- resolution


_NOT_FILES = (
    (stat_module.S_ISCHR, "a character device"),
    (stat_module.S_ISBLK, "a block device"),
    (stat_module.S_ISFIFO, "a pipe (FIFO)"),
    (stat_module.S_ISSOCK, "a socket"),
)


def _check_regular_file(path: Path) -> None:
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


def bundled_path(spec: BundledWeights) -> Path:
    """Bundled files live next to the registry that names them."""
    return registry_path().parent / spec.file


def _resolve_bundled(task: Task, entry: TaskWeights) -> ResolvedWeights:
    if entry.bundled is None:
        raise WeightsError(
            f"no bundled weights for {task.value} in this installation; use the published "
            "weights (--model published) or --weights FILE"
        )
    path = bundled_path(entry.bundled)
    if not path.is_file():
        raise WeightsError(
            f"bundled weights {path} are missing; reinstall mprnet or use --weights FILE"
        )
    verify_file(path, entry.bundled.sha256)
    return ResolvedWeights(path, Source.BUNDLED, task, entry.bundled.config)


def _resolve_published(
    task: Task, entry: TaskWeights, notify: Notify | None, quiet: bool, download: bool
) -> ResolvedWeights:
    found = find_cached(entry.published)
    if found is not None:
        return found
    if not download:
        raise OfflineError(
            f"the published {task.value} weights are not in the cache; run "
            f"`mprnet weights download {task.value}` (nothing is downloaded here)"
        )
    return download_published(entry.published, notify=notify, quiet=quiet)


def resolve(
    task: Task | None,
    *,
    weights: str | os.PathLike[str] | None = None,
    model: ModelChoice = ModelChoice.AUTO,
    notify: Notify | None = None,
    quiet: bool = False,
    download: bool = True,
) -> ResolvedWeights:
    """Find the weights file to use; see the module docstring for the order.

    `download=False` never touches the network (`mprnet weights path`).
    """
    if weights is not None:
        if model is not ModelChoice.AUTO:
            raise UsageError("--weights and --model cannot be combined: pick one")
        path = Path(weights).expanduser()
        _check_regular_file(path)
        return ResolvedWeights(path, Source.FILE, task)
    if task is None:
        raise UsageError("name a task or pass --weights FILE")
    entry = registry()[task]
    if model is ModelChoice.BUNDLED:
        return _resolve_bundled(task, entry)
    if model is ModelChoice.PUBLISHED:
        return _resolve_published(task, entry, notify, quiet, download)
    try:
        return _resolve_published(task, entry, notify, quiet, download)
    except OfflineError:
        if entry.bundled is None:
            raise
        resolved = _resolve_bundled(task, entry)
        if notify:
            notify(bundled_notice(entry.bundled, first=_first_time(f"bundled-{task.value}")))
        return resolved


def bundled_notice(bundled: BundledWeights, *, first: bool = True) -> str:
    """What a user hears when the compact weights stand in: in full the first time (how
    good they are, the way out), then one short line; both say how to silence it."""
    task = bundled.task.value
    if not first:
        return (
            f"Using the bundled compact {task} weights (published ones not cached, Hub "
            "unreachable); --model bundled or -q hides this line"
        )
    quality = f": {bundled.note}" if bundled.note else ""
    return (
        f"Using the bundled compact {task} weights (the published ones are not cached and the "
        f"Hub is unreachable){quality}. For the published network run "
        f"`mprnet weights download {task}` once online; --model bundled uses these without "
        "this notice (shown in full once)"
    )


def _first_time(notice: str) -> bool:
    """True the first time `notice` is shown with this mprnet cache (a marker file there).

    A cache that cannot be written (read-only home, container) cannot remember: every run
    is the first, and the notice stays in full."""
    marker = cache_root() / "notices" / notice
    if marker.exists():
        return False
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return True


@dataclass(frozen=True)
class WeightsStatus:
    """One row of `mprnet weights list`."""

    task: Task
    source: Source
    number: int | None  # the published source's place in the order (1-based)
    name: str
    cached: bool
    size: int | None
    path: Path | None
    license: str


def status() -> list[WeightsStatus]:
    """What is available locally for every task, without any network call."""
    rows: list[WeightsStatus] = []
    for task, entry in registry().items():
        spec = entry.published
        for n, hub_file in enumerate(spec.sources, 1):
            cached = cached_file(hub_file)
            rows.append(
                WeightsStatus(
                    task,
                    Source.PUBLISHED,
                    n,
                    hub_file.label,
                    cached is not None,
                    cached.stat().st_size if cached else hub_file.size,
                    cached,
                    spec.license.short,
                )
            )
        record = _read_store(_imports_path()).get(task.value)
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            path = Path(record["path"])
            present = path.is_file()
            rows.append(
                WeightsStatus(
                    task,
                    Source.IMPORTED,
                    None,
                    str(record.get("from") or path.name),
                    present,
                    path.stat().st_size if present else None,
                    path if present else None,
                    spec.license.short,
                )
            )
        if entry.bundled is not None:
            path = bundled_path(entry.bundled)
            present = path.is_file()
            rows.append(
                WeightsStatus(
                    task,
                    Source.BUNDLED,
                    None,
                    entry.bundled.file,
                    present,
                    path.stat().st_size if present else None,
                    path if present else None,
                    entry.bundled.license.short,
                )
            )
    return rows
