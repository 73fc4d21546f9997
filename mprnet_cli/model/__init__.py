"""The network, its configuration and checkpoint reading.

The configuration is torch-free and imported at once; the rest loads torch, so it is
imported on first use (PEP 562): code that only needs a weights file's configuration,
such as the weights cache on a Ray driver, never pays for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mprnet_cli.model.config import MPRNetConfig, detect_config

if TYPE_CHECKING:
    from mprnet_cli.model.checkpoint import Checkpoint, build_model, read_checkpoint
    from mprnet_cli.model.network import MPRNet

#: Each torch-bound name and the module that holds it.
_LAZY = {
    "Checkpoint": "checkpoint",
    "build_model": "checkpoint",
    "read_checkpoint": "checkpoint",
    "MPRNet": "network",
}

__all__ = [
    "Checkpoint",
    "MPRNet",
    "MPRNetConfig",
    "build_model",
    "detect_config",
    "read_checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
