"""The weights registry: which networks exist for each task and where their files live.

`weights/registry.json` is data, not code, so pinning a new revision, adding a checksum or
another mirror is a one-line change; it is also the one home of each published network's
configuration. `MPRNET_REGISTRY` points at another registry file (an internal mirror, or
tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from mprnet_cli.errors import WeightsError
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.tasks import Task
from mprnet_cli.weights.hub import HubFile, RepoType

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


def weights_dir() -> Path:
    """The folder holding the registry and bundled weights (installed or in the repo)."""
    installed = Path(__file__).resolve().parents[1] / "_weights"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "weights"


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
            key = task.spec.registry_key
            p = raw["published"][key]
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
            b = raw.get("bundled", {}).get(key)
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


def bundled_path(spec: BundledWeights) -> Path:
    """Bundled files live next to the registry that names them."""
    return registry_path().parent / spec.file
