"""`mprnet weights list`: what is available locally for every task, without any network call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mprnet_cli.tasks import Task
from mprnet_cli.weights.cache import imports_path, read_store
from mprnet_cli.weights.hub import cached_file
from mprnet_cli.weights.registry import Source, bundled_path, registry


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
        record = read_store(imports_path()).get(task.value)
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
