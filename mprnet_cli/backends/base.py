"""The Backend protocol: what the tile loop needs from an inference engine, and nothing more.

A backend takes a float32 NCHW batch (values in [0, 1], sides a multiple of its
alignment) and returns the restored float32 NCHW batch. Everything the tile loop
and out-of-memory recovery must know is in its `Capabilities`, so `pipeline.py`
never asks which engine it is running (the shape of spandrel's descriptors).
No torch here: the protocol is numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from mprnet_cli.choices import Precision

Batch = NDArray[np.float32]
#: Where a backend reports a one-line notice (a fallback, a conversion step).
Notify = Callable[[str], None]
#: Peak bytes per input pixel for a device type and precision (`api.Restorer` measures it).
MemoryCost = Callable[[str, Precision], float]


@dataclass(frozen=True)
class BackendSpec:
    """What any backend needs to run one network (here, not in the registry, so that
    each engine's module imports it without importing the registry back)."""

    model: Any  # torch.nn.Module, in float32 on the CPU (Any: no torch import here)
    device: Any  # torch.device
    precision: Precision = Precision.AUTO
    memory: MemoryCost | None = None
    compile: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What tiling and recovery need to know about a backend in its current placement.

    `bytes_per_pixel`: peak memory of one forward pass per input pixel (None: unknown,
    tile at a safe default). `max_tile`: the largest tile worth running for speed
    (None: memory decides). `one_pass_side`: images with no side above it run in one
    pass when they fit (None: whenever they fit). `can_fall_back`: after running out of
    memory at the smallest tile, the backend can move to the CPU and go on.
    """

    align: int = 8
    precisions: frozenset[Precision] = frozenset({Precision.FP32})
    bytes_per_pixel: float | None = None
    max_tile: int | None = None
    one_pass_side: int | None = None
    can_fall_back: bool = False


class Backend(Protocol):
    """An inference engine for one network. Implementations: `backends.torch`, `backends.openvino`."""

    @property
    def name(self) -> str:
        """Registry name ("torch", "openvino")."""
        ...

    @property
    def device(self) -> str:
        """Where it runs now, for messages and stats ("cpu", "cuda:0")."""
        ...

    @property
    def precision(self) -> Precision:
        """What it computes in now (never AUTO)."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    def __call__(self, batch: Batch) -> Batch:
        """(N, C, h, w) float32 -> (N, C, h, w) float32, both on the host."""
        ...

    def free_memory(self) -> int:
        """Bytes a new allocation on the backend's device can use now."""
        ...

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by `__call__`, means the batch did not fit."""
        ...

    def release_memory(self) -> None:
        """Return cached memory to the device after an out-of-memory error."""
        ...

    def fall_back(self) -> None:
        """Move to the CPU (only called when `capabilities.can_fall_back`)."""
        ...

    def ignore_speed_limits(self) -> None:
        """Tile for memory only: whole images whenever they fit (evaluation protocols)."""
        ...


def looks_like_oom(exc: BaseException) -> bool:
    """Allocator failures that every runtime reports in its own words."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(
            s in text
            for s in ("out of memory", "failed to allocate", "cannot allocate", "bad_alloc")
        )
    return False
