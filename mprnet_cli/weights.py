"""Where weights come from: an explicit file, the Hub cache, a download, or the bundle.

The registry (`weights/registry.json`) is data, not code, so pinning a new
revision or adding a checksum is a one-line change. `MPRNET_REGISTRY` points
at another registry file (an internal mirror, or tests).

Resolution for a task when the user names no file (`--model auto`):
published weights from the Hugging Face cache (no network call), else a
download, else the bundled compact weights with one notice line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mprnet_cli.choices import ModelChoice
from mprnet_cli.errors import IntegrityError, OfflineError, UsageError, WeightsError
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.tasks import Task

Notify = Callable[[str], None]


class Source(str, Enum):
    FILE = "file"
    PUBLISHED = "published"
    BUNDLED = "bundled"


@dataclass(frozen=True)
class Benchmark:
    psnr: float
    ssim: float


@dataclass(frozen=True)
class License:
    name: str
    url: str
    short: str


@dataclass(frozen=True)
class PublishedWeights:
    """The authors' checkpoint for one task, as mirrored on the Hub."""

    task: Task
    repo: str
    filename: str
    revision: str | None
    sha256: str | None
    size: int | None
    license: License
    config: MPRNetConfig
    benchmarks: Mapping[str, Benchmark] = field(default_factory=dict)
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
    benchmarks: Mapping[str, Benchmark] = field(default_factory=dict)


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


def _benchmarks(data: Mapping[str, Any]) -> dict[str, Benchmark]:
    return {name: Benchmark(float(v["psnr"]), float(v["ssim"])) for name, v in data.items()}


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
                repo=p["repo"],
                filename=p["filename"],
                revision=p.get("revision"),
                sha256=p.get("sha256"),
                size=p.get("size"),
                license=licenses[p["license"]],
                config=MPRNetConfig.from_dict(p["config"]),
                benchmarks=_benchmarks(p.get("benchmarks", {})),
                memory_bytes_per_pixel={
                    k: float(v) for k, v in p.get("memory_bytes_per_pixel", {}).items()
                },
            )
            b = raw.get("bundled", {}).get(task.value)
            bundled = None
            if b is not None:
                bundled = BundledWeights(
                    task=task,
                    file=b["file"],
                    sha256=b["sha256"],
                    config=MPRNetConfig.from_dict(b["config"]),
                    license=licenses[b["license"]],
                    benchmarks=_benchmarks(b.get("benchmarks", {})),
                )
            out[task] = TaskWeights(task, published, bundled)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"weights registry {path} is unreadable or incomplete: {exc!r}") from exc
    return out


def registry() -> dict[Task, TaskWeights]:
    return _load_registry(registry_path())


# --------------------------------------------------------------------------- verification

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


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


def _verified_db() -> Path:
    return cache_root() / "verified.json"


def verify_file(path: Path, sha256: str | None, size: int | None = None) -> None:
    """Raise `IntegrityError` unless the file has the expected size and hash.

    Hashing a 80 MB checkpoint costs a fraction of a second, so a successful
    check is remembered by (size, mtime) and repeated only when the file changes.
    """
    stat = path.stat()
    if size is not None and stat.st_size != size:
        raise IntegrityError(
            f"{path} has {stat.st_size} bytes, expected {size}: the download is incomplete or "
            "the file was altered; delete it and run `mprnet weights download --force`"
        )
    if sha256 is None:
        return
    db_path = _verified_db()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns, sha256]
    db = _read_store(db_path)
    if db.get(key) == stamp:
        return
    actual = sha256_file(path)
    if actual != sha256:
        raise IntegrityError(
            f"{path} is corrupt or altered (sha256 {actual[:12]}…, expected {sha256[:12]}…); "
            "run `mprnet weights download --force` to fetch it again"
        )
    db[key] = stamp
    _write_store(db_path, db)  # if it cannot be written, the next run only hashes again


def _read_store(path: Path) -> dict[str, Any]:
    """One of mprnet's small JSON notes in its cache; missing or unreadable: empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_store(path: Path, data: dict[str, Any]) -> None:
    """Replace a JSON note atomically; a read-only cache is not an error (notes are hints)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass


def _hub_sha(path: Path) -> str | None:
    """The Hub's hash of a cached file: LFS blobs are stored under their sha256."""
    blob = Path(os.path.realpath(path)).name
    return blob if _HEX64.match(blob) else None


def _expected_sha(spec: PublishedWeights, path: Path) -> str | None:
    """The registry's hash, else the Hub's."""
    return spec.sha256 or _hub_sha(path)


# --------------------------------------------------------------------------- Hub access


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the endpoint.

    huggingface_hub retries network errors with back-off for about half a minute;
    an offline user should hear what to do at once instead.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy only the real request can tell
    url = urlsplit(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _aliases_path() -> Path:
    return _verified_db().with_name("aliases.json")


def _alias_key(spec: PublishedWeights) -> str:
    return f"{spec.repo}@{spec.revision or 'main'}/{spec.filename}"


def _published_name(spec: PublishedWeights) -> str:
    """The file actually used for a spec: its own name, or the one picked when it vanished."""
    name = _read_store(_aliases_path()).get(_alias_key(spec))
    return name if isinstance(name, str) else spec.filename


def _remember_alias(spec: PublishedWeights, picked: str) -> None:
    aliases = _read_store(_aliases_path())
    aliases[_alias_key(spec)] = picked
    _write_store(_aliases_path(), aliases)  # without it the next run lists the repo again


def cached_published(spec: PublishedWeights) -> Path | None:
    """The cached file for a spec (or its recorded replacement), found without any network call."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        spec.repo, _published_name(spec), revision=spec.revision or "main"
    )
    return Path(found) if isinstance(found, str) else None


def _verify_published(spec: PublishedWeights, path: Path) -> None:
    """Registry checks apply to the registry's own file; a replacement has only the Hub's hash."""
    if _published_name(spec) == spec.filename:
        verify_file(path, _expected_sha(spec, path), spec.size)
    else:
        verify_file(path, _hub_sha(path))


_TASK_WORDS = {
    Task.DERAIN: ("derain", "rain"),
    Task.DEBLUR: ("deblur", "blur", "gopro"),
    Task.DENOISE: ("denois", "noise", "sidd"),
}
_CKPT_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt", ".bin")


def pick_checkpoint(task: Task, files: list[str]) -> str | None:
    """Choose the task's checkpoint among a repo's files when the registry name is gone."""
    candidates = [f for f in files if f.lower().endswith(_CKPT_SUFFIXES)]
    for word in _TASK_WORDS[task]:
        hits = sorted(f for f in candidates if word in f.lower())
        if hits:
            # Prefer safetensors, then the shortest (least decorated) name.
            hits.sort(key=lambda f: (not f.endswith(".safetensors"), len(f)))
            return hits[0]
    return None


def download_published(
    spec: PublishedWeights,
    *,
    notify: Notify | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Fetch the task's published checkpoint into the Hugging Face cache and verify it."""
    from huggingface_hub import hf_hub_download, list_repo_files
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if _hub_offline() or not hub_reachable():
        raise offline_error(spec.task)
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry chatter is not for our users
    revision = spec.revision or "main"
    filename = _published_name(spec)
    first_time = cached_published(spec) is None
    if first_time and notify:
        notify(
            f"Downloading the published MPRNet {spec.task.value} weights from "
            f"{spec.repo}. They are under the {spec.license.name}: {spec.license.url}"
        )
    if quiet:
        disable_progress_bars()
    try:
        try:
            path = hf_hub_download(spec.repo, filename, revision=revision, force_download=force)
        except EntryNotFoundError:
            files = list_repo_files(spec.repo, revision=revision)
            picked = pick_checkpoint(spec.task, files)
            if picked is None:
                raise WeightsError(
                    f"{spec.repo} has no {spec.filename} and no other {spec.task.value} checkpoint; "
                    f"its files are: {', '.join(files) or 'none'}"
                ) from None
            if notify:
                notify(f"{spec.filename} is not in {spec.repo}; using {picked} instead")
            path = hf_hub_download(spec.repo, picked, revision=revision, force_download=force)
            _remember_alias(spec, picked)
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as exc:
        raise WeightsError(f"cannot access {spec.repo}@{revision}: {_first_line(exc)}") from exc
    except LocalEntryNotFoundError as exc:
        raise offline_error(spec.task) from exc
    except HfHubHTTPError as exc:
        raise WeightsError(f"download from {spec.repo} failed: {_first_line(exc)}") from exc
    except OSError as exc:
        # Connection errors (httpx/requests) derive from OSError in some versions.
        raise offline_error(spec.task) from exc
    except Exception as exc:
        if _is_connection_error(exc):
            raise offline_error(spec.task) from exc
        raise
    finally:
        if quiet:
            enable_progress_bars()
    local = Path(path)
    _verify_published(spec, local)
    return local


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {"ConnectError", "ConnectionError", "TimeoutException", "NetworkError", "ProxyError"}
    )


def offline_error(task: Task) -> OfflineError:
    return OfflineError(
        f"the published {task.value} weights are not cached and the Hugging Face Hub cannot be "
        f"reached. Connect once and run `mprnet weights download {task.value}`, pass a file "
        "with --weights FILE, or use --model bundled"
    )


# --------------------------------------------------------------------------- resolution


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
    task: Task, entry: TaskWeights, notify: Notify | None, quiet: bool
) -> ResolvedWeights:
    spec = entry.published
    cached = cached_published(spec)
    if cached is not None:
        _verify_published(spec, cached)
        return ResolvedWeights(cached, Source.PUBLISHED, task, spec.config)
    path = download_published(spec, notify=notify, quiet=quiet)
    return ResolvedWeights(path, Source.PUBLISHED, task, spec.config)


def resolve(
    task: Task | None,
    *,
    weights: str | os.PathLike[str] | None = None,
    model: ModelChoice = ModelChoice.AUTO,
    notify: Notify | None = None,
    quiet: bool = False,
) -> ResolvedWeights:
    """Find the weights file to use; see the module docstring for the order."""
    if weights is not None:
        if model is not ModelChoice.AUTO:
            raise UsageError("--weights and --model cannot be combined: pick one")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        return ResolvedWeights(path, Source.FILE, task)
    if task is None:
        raise UsageError("name a task or pass --weights FILE")
    entry = registry()[task]
    if model is ModelChoice.BUNDLED:
        return _resolve_bundled(task, entry)
    if model is ModelChoice.PUBLISHED:
        return _resolve_published(task, entry, notify, quiet)
    try:
        return _resolve_published(task, entry, notify, quiet)
    except OfflineError:
        if entry.bundled is None:
            raise
        resolved = _resolve_bundled(task, entry)
        if notify:
            notify(
                f"Using the bundled compact {task.value} weights (the published ones are not cached "
                f"and the Hub is unreachable); run `mprnet weights download {task.value}` once "
                "online for the full published network"
            )
        return resolved


@dataclass(frozen=True)
class WeightsStatus:
    """One row of `mprnet weights list`."""

    task: Task
    source: Source
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
        cached = cached_published(spec)
        rows.append(
            WeightsStatus(
                task,
                Source.PUBLISHED,
                f"{spec.repo}/{spec.filename}",
                cached is not None,
                cached.stat().st_size if cached else spec.size,
                cached,
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
                    entry.bundled.file,
                    present,
                    path.stat().st_size if present else None,
                    path if present else None,
                    entry.bundled.license.short,
                )
            )
    return rows
