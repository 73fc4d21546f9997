"""Where mprnet keeps its files on this machine; light (no imports of ours)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """mprnet's own cache: `MPRNET_CACHE`, else `$XDG_CACHE_HOME/mprnet` or `~/.cache/mprnet`."""
    root = os.environ.get("MPRNET_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "mprnet"
