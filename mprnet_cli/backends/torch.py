"""The PyTorch backend: eager (or torch.compile'd) MPRNet on a CPU, CUDA or MPS device."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import overload

import numpy as np
import torch
from torch import nn

from mprnet_cli.backends.base import (
    BACKENDS,
    BackendSpec,
    Batch,
    Capabilities,
    Notify,
    looks_like_oom,
)
from mprnet_cli.choices import BackendChoice, Precision
from mprnet_cli.host.device import (
    autocast,
    available_memory,
    choose_precision,
    empty_cache,
    fallback_precision,
)

# On a CPU, MPRNet's per-pixel speed falls once its feature maps outgrow the caches:
# on a 2-core EPYC, 512-px tiles restored 1024x768 and 1280x960 images 1.25-1.4x
# faster than one pass, overlap included (benchmarks/bench_cpu_tiles.py), so `auto`
# never goes above them there. Images up to CPU_ONE_PASS_SIDE gain too little to pay
# for the overlap and run in one pass. GPUs prefer one pass, or the largest tile that fits.
CPU_AUTO_TILE = 512
CPU_ONE_PASS_SIDE = 768

# torch.OutOfMemoryError appeared in 2.5; older releases only have the CUDA one.
_TORCH_OOM: type[BaseException] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# Peak bytes per input pixel of one forward pass on a device type at a precision.
MemoryCost = Callable[[str, Precision], float]

_PRECISIONS = BACKENDS[BackendChoice.TORCH].precisions


def speed_limits(device_type: str) -> tuple[int | None, int | None]:
    """(largest tile worth running, largest image side run in one pass); None: memory decides."""
    return (CPU_AUTO_TILE, CPU_ONE_PASS_SIDE) if device_type == "cpu" else (None, None)


class TorchBackend:
    """The model on its device, at its precision, run on batches of tiles.

    `precision` is what was asked for (`auto` is resolved for the device, and again for
    the CPU after an out-of-memory fallback); `memory` prices a tile for `--tile auto`.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        precision: Precision = Precision.FP32,
        *,
        channels_last: bool = True,
        memory: MemoryCost | None = None,
        compile: bool = False,
    ) -> None:
        self.torch_device = device
        self.requested_precision = precision
        self.precision = choose_precision(device, precision)
        self.channels_last = channels_last
        self.memory = memory
        self.model = model.eval().requires_grad_(False)
        self._place()
        self.forward: Callable[[torch.Tensor], list[torch.Tensor]] = self.model
        if compile:
            # Tiles share one shape, so one compilation serves the whole image.
            self.forward = torch.compile(self.model)
        self.capabilities = self._capabilities()

    @property
    def device(self) -> str:
        return str(self.torch_device)

    def _capabilities(self) -> Capabilities:
        kind = self.torch_device.type
        max_tile, one_pass = speed_limits(kind)
        return Capabilities(
            align=8,
            precisions=_PRECISIONS.get(kind, frozenset({Precision.FP32})),
            bytes_per_pixel=self.memory(kind, self.precision) if self.memory else None,
            max_tile=max_tile,
            one_pass_side=one_pass,
            can_fall_back=kind != "cpu",
        )

    def _place(self) -> None:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model.to(device=self.torch_device)
        self.model.to(memory_format=fmt)  # type: ignore[call-overload]  # missing from torch's stubs

    def fall_back(self) -> None:
        """Move to the CPU after the GPU ran out of memory even at the smallest tile.

        The CPU gets its own precision (`fallback_precision`), memory price (the GPU's
        figure under-states the CPU's need) and speed-minded tile limits."""
        old = self.torch_device
        self.torch_device = torch.device("cpu")
        self.precision = fallback_precision(self.requested_precision)
        self._place()
        self.forward = self.model  # a compiled graph is specific to the old device
        self.capabilities = self._capabilities()
        empty_cache(old)

    def ignore_speed_limits(self) -> None:
        self.capabilities = dataclasses.replace(
            self.capabilities, max_tile=None, one_pass_side=None
        )

    def free_memory(self) -> int:
        return available_memory(self.torch_device)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """CUDA/MPS/CPU allocator failures (their types differ by device)."""
        return isinstance(exc, _TORCH_OOM) or looks_like_oom(exc)

    def release_memory(self) -> None:
        empty_cache(self.torch_device)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) float32 on the CPU -> restored (N, 3, h, w) float32 on the CPU."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = batch.to(self.torch_device, non_blocking=True).contiguous(memory_format=fmt)
        with torch.inference_mode(), autocast(self.torch_device, self.precision):
            out: torch.Tensor = self.forward(x)[0]
        return out.float().cpu()

    @overload
    def __call__(self, batch: Batch) -> Batch: ...
    @overload
    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, batch: Batch | torch.Tensor) -> Batch | torch.Tensor:
        """The Backend call on numpy; tensors in give tensors out (benchmarks, tests)."""
        if isinstance(batch, torch.Tensor):
            return self.run(batch)
        out = self.run(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return out.contiguous().numpy()


def create(spec: BackendSpec, notify: Notify | None = None) -> TorchBackend:
    """The registry's factory for `--backend torch` (`base.BACKENDS`)."""
    return TorchBackend(
        spec.model, spec.device, spec.precision, memory=spec.memory, compile=spec.compile
    )
