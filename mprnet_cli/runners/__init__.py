"""Executors of restore jobs. Light to import: `ray` is imported by `runners.ray` alone.

The engines sit behind one seam (`runners.base`: `RunRequest`, `Runner`, `get_runner`);
`local` is the threaded runner of this machine, `ray` the Ray cluster's. `load_ray()`
returns the Ray runner package, or raises a `UsageError` that says what to install when
Ray is missing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Final

from mprnet_cli.errors import UsageError

__all__ = ["RAY_EXTRA", "RaySettings", "load_ray"]

#: What a user installs to get `--engine ray`.
RAY_EXTRA: Final = "pip install 'mprnet-cli[ray]'"
_RAY_MODULES: Final = frozenset({"ray", "pyarrow"})


@dataclass(frozen=True)
class RaySettings:
    """The cluster options of `--engine ray` (None: decided from the cluster's resources)."""

    address: str | None = None  # --ray-address; None: the cluster `ray` finds, else a local one
    workers: int | None = None  # --workers: inference actors (a fixed pool when given)
    gpus_per_worker: float | None = None  # --gpus-per-worker, fractions allowed


def load_ray() -> ModuleType:
    """`mprnet_cli.runners.ray`, or `UsageError` naming the extra when Ray is not installed."""
    try:
        return importlib.import_module("mprnet_cli.runners.ray")
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in _RAY_MODULES:
            raise
        raise UsageError(
            f"--engine ray needs Ray Data, which is not installed; run: {RAY_EXTRA}"
        ) from None
