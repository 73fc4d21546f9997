"""Weights: the registry, the Hub sources, the cache and the bundled fallback.

- `registry.py`: the networks each task has (`weights/registry.json`) and their types;
- `hub.py`: the only import of huggingface_hub;
- `cache.py`: verification, facts remembered per file version, imports by hand;
- `sources.py`: resolution (`resolve`) and downloads;
- `status.py`: `mprnet weights list`.

The names below are the package's public API; import them from `mprnet_cli.weights`.
"""

from __future__ import annotations

from mprnet_cli.weights.cache import (
    check_network,
    file_sha256,
    import_file,
    network_of,
    sha256_file,
    verify_file,
)
from mprnet_cli.weights.registry import (
    BundledWeights,
    License,
    Notify,
    PublishedWeights,
    ResolvedWeights,
    Source,
    TaskWeights,
    bundled_path,
    published_configs,
    registry,
    registry_path,
    weights_dir,
)
from mprnet_cli.weights.sources import (
    bundled_notice,
    download_published,
    find_cached,
    offline_error,
    resolve,
)
from mprnet_cli.weights.status import WeightsStatus, status

__all__ = [
    "BundledWeights",
    "License",
    "Notify",
    "PublishedWeights",
    "ResolvedWeights",
    "Source",
    "TaskWeights",
    "WeightsStatus",
    "bundled_notice",
    "bundled_path",
    "check_network",
    "download_published",
    "file_sha256",
    "find_cached",
    "import_file",
    "network_of",
    "offline_error",
    "published_configs",
    "registry",
    "registry_path",
    "resolve",
    "sha256_file",
    "status",
    "verify_file",
    "weights_dir",
]
