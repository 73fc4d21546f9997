"""Inference engines behind one protocol, and the small registry that picks one.

Each engine is declared once, as a `BackendDescriptor` in `base.BACKENDS`; this module
reads the descriptors and nothing else about an engine. `create` turns a
`BackendChoice` into a running backend: `auto` takes the best-ranked engine that runs
on the device and is installed, and an engine that is missing or cannot convert the
network gives way to PyTorch with one notice line. This module imports neither torch
nor openvino; each engine's module imports its own, when it is created.
"""

from __future__ import annotations

from mprnet_cli.backends.base import (
    BACKENDS,
    FALLBACK,
    Backend,
    BackendDescriptor,
    BackendSpec,
    Capabilities,
    MemoryCost,
    Notify,
    descriptor,
    load,
)
from mprnet_cli.choices import BackendChoice
from mprnet_cli.errors import BackendError, UsageError

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendDescriptor",
    "BackendSpec",
    "Capabilities",
    "MemoryCost",
    "Notify",
    "choose",
    "create",
    "descriptor",
]


def choose(choice: BackendChoice, device_type: str, *, compile: bool = False) -> BackendChoice:
    """What `--backend auto` means: the lowest `auto_rank` that runs on the device, can
    compile when --compile is asked for, and is installed (OpenVINO on the CPU where it is
    installed, else PyTorch; `base.BACKENDS`). A named backend is returned as it is."""
    if choice is not BackendChoice.AUTO:
        return choice
    ranked = sorted(
        (d for d in BACKENDS.values() if d.auto_rank is not None), key=lambda d: d.auto_rank or 0
    )
    for d in ranked:
        if d.runs_on(device_type) and (d.compile or not compile) and d.installed():
            return d.choice
    raise UsageError(f"no installed backend runs on {device_type}; use --device cpu")


def create(choice: BackendChoice, spec: BackendSpec, notify: Notify | None = None) -> Backend:
    """Build the chosen backend; one that cannot run here falls back to PyTorch with a notice."""
    device_type = str(getattr(spec.device, "type", spec.device))
    chosen: BackendDescriptor = descriptor(choose(choice, device_type, compile=spec.compile))
    chosen.check(device_type, spec.precision, compile=spec.compile)
    factory = chosen.factory
    if choice is BackendChoice.AUTO and chosen.auto_factory is not None:
        factory = chosen.auto_factory
    try:
        backend: Backend = load(factory)(spec, notify)
        return backend
    except BackendError as exc:
        fallback = descriptor(FALLBACK)
        if notify is not None:
            notify(f"{exc}; using {fallback.label} instead")
        fallback_backend: Backend = load(fallback.factory)(spec, notify)
        return fallback_backend
