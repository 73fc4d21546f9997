"""Inference engines behind one protocol, and the small registry that picks one.

`create` turns a `BackendChoice` into a running backend: `auto` takes the fastest
one measured for the device (docs/speed-and-memory.md, speed table), and an engine that is missing
or cannot convert the network gives way to PyTorch with one notice line. This
module imports neither torch nor openvino; each engine's module imports its own.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from mprnet_cli.backends.base import Backend, BackendSpec, Capabilities, MemoryCost, Notify
from mprnet_cli.choices import BackendChoice
from mprnet_cli.errors import BackendError, UsageError

__all__ = [
    "Backend",
    "BackendSpec",
    "Capabilities",
    "MemoryCost",
    "Notify",
    "choose",
    "create",
]


def _torch(spec: BackendSpec, notify: Notify | None) -> Backend:
    from mprnet_cli.backends.torch import TorchBackend

    return TorchBackend(
        spec.model, spec.device, spec.precision, memory=spec.memory, compile=spec.compile
    )


def _openvino(spec: BackendSpec, notify: Notify | None) -> Backend:
    from mprnet_cli.backends.openvino import OpenVinoBackend

    return OpenVinoBackend.create(spec, notify=notify)


REGISTRY: dict[BackendChoice, Callable[[BackendSpec, Notify | None], Backend]] = {
    BackendChoice.TORCH: _torch,
    BackendChoice.OPENVINO: _openvino,
}


def openvino_installed() -> bool:
    """Whether the openvino package can be imported (without importing it: ~0.3 s)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def choose(choice: BackendChoice, device_type: str, *, compile: bool = False) -> BackendChoice:
    """What `--backend auto` means: OpenVINO on the CPU where it is installed (faster than
    PyTorch there in both precisions, docs/speed-and-memory.md speed table), PyTorch on GPUs and with --compile.
    On the CPU, `openvino.create_auto` then still runs PyTorch for compact networks and for
    a network not converted yet (converting it in the background)."""
    if choice is not BackendChoice.AUTO:
        return choice
    if device_type == "cpu" and not compile and openvino_installed():
        return BackendChoice.OPENVINO
    return BackendChoice.TORCH


def create(choice: BackendChoice, spec: BackendSpec, notify: Notify | None = None) -> Backend:
    """Build the chosen backend; one that cannot run here falls back to PyTorch with a notice."""
    device_type = str(getattr(spec.device, "type", spec.device))
    chosen = choose(choice, device_type, compile=spec.compile)
    if chosen is BackendChoice.OPENVINO:
        if device_type != "cpu":
            raise UsageError(
                f"--backend openvino runs on the CPU, not {spec.device}; use --device cpu "
                "or --backend torch"
            )
        if spec.compile:
            raise UsageError("--compile is a PyTorch option; use --backend torch with it")
    try:
        if choice is BackendChoice.AUTO and chosen is BackendChoice.OPENVINO:
            from mprnet_cli.backends.openvino import create_auto

            backend: Backend = create_auto(spec, notify)
            return backend
        return REGISTRY[chosen](spec, notify)
    except BackendError as exc:
        if notify is not None:
            notify(f"{exc}; using PyTorch instead")
        return _torch(spec, notify)
