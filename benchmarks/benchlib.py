"""Shared by the benchmark scripts: where and when a result was measured, resident
memory readings (Linux /proc, else getrusage), and runs of one measurement in a fresh
process, so peaks do not mix."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mprnet_cli.backends.bench import maxrss_bytes, peak_rss_bytes, reset_peak, status_bytes

__all__ = [
    "cpu_name",
    "host_info",
    "maxrss_bytes",
    "measured_at",
    "peak_rss_bytes",
    "reset_peak",
    "spawn_child",
    "status_bytes",
]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_info() -> dict[str, Any]:
    """The machine and software a result was measured with (imports torch)."""
    import torch

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def measured_at() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def spawn_child(script: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run `script --child SPEC` in a fresh interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
