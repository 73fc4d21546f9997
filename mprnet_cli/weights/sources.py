"""Resolving a task's weights: an explicit file, the Hub cache, a download, an import, the
bundle, each verified as it is resolved.

Resolution for a task when the user names no file (`--model auto`): the first of the task's
published sources found in the Hugging Face cache (no network call), else a file imported by
hand, else a download trying the sources in order, else the bundled compact weights with one
notice line.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mprnet_cli.choices import ModelChoice
from mprnet_cli.errors import (
    CheckpointError,
    IntegrityError,
    OfflineError,
    UsageError,
    WeightsError,
)
from mprnet_cli.host.paths import cache_root
from mprnet_cli.tasks import Task
from mprnet_cli.weights.cache import (
    check_network,
    check_regular_file,
    file_sha256,
    imported_file,
    verify_file,
)
from mprnet_cli.weights.hub import (
    CacheWriteError,
    HubFile,
    HubUnreachableError,
    SourceUnavailableError,
    cached_file,
    fetch,
    hub_output,
    hub_reachable,
    hub_sha,
)
from mprnet_cli.weights.registry import (
    BundledWeights,
    Notify,
    PublishedWeights,
    ResolvedWeights,
    Source,
    TaskWeights,
    bundled_path,
    registry,
)


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
        check_regular_file(path)
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
