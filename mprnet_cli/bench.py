"""`mprnet bench`: how fast each network runs here, against the reference execution.

Random weights are enough for timing (speed does not depend on the values).
Every result is measured in the same process and run as the reference mode it
is compared with, because these machines are noisy: only ratios from one run
are meaningful.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mprnet_cli.device import Precision, supports_precision
from mprnet_cli.model.config import PUBLISHED_CONFIGS, MPRNetConfig
from mprnet_cli.model.network import MPRNet

MEGAPIXELS_12 = 12e6


@dataclass(frozen=True)
class Mode:
    """One way of executing the same network."""

    name: str
    batched: bool
    channels_last: bool
    precision: Precision
    compile: bool = False


REFERENCE = Mode("reference", batched=False, channels_last=False, precision=Precision.FP32)
MODES: dict[str, Mode] = {
    "reference": REFERENCE,
    "fp32": Mode("fp32", batched=True, channels_last=True, precision=Precision.FP32),
    "bf16": Mode("bf16", batched=True, channels_last=True, precision=Precision.BF16),
    "fp16": Mode("fp16", batched=True, channels_last=True, precision=Precision.FP16),
    "bf16+compile": Mode(
        "bf16+compile", batched=True, channels_last=True, precision=Precision.BF16, compile=True
    ),
    "fp32+compile": Mode(
        "fp32+compile", batched=True, channels_last=True, precision=Precision.FP32, compile=True
    ),
}


@dataclass(frozen=True)
class BenchResult:
    task: str
    mode: str
    device: str
    width: int
    height: int
    batch: int
    threads: int
    seconds_per_image: float
    megapixels_per_second: float
    seconds_per_12mp: float
    gmac_per_image: float
    gflops: float
    peak_memory_bytes: int
    speedup_vs_reference: float | None
    first_call_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def count_macs(model: MPRNet, height: int, width: int) -> int:
    """Multiply-accumulates of every convolution in one forward pass (per image)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        per_out = (module.in_channels // module.groups) * kh * kw
        total += output[0].numel() * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, model.config.in_c, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _cpu_peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _reset_cpu_peak() -> bool:
    """Linux lets a process reset its own peak RSS (clear_refs 5); elsewhere peaks accumulate."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _vmhwm() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _cpu_peak_rss()


@contextlib.contextmanager
def _peak_memory(device: torch.device) -> Iterator[Callable[[], int]]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield lambda: int(torch.cuda.max_memory_allocated(device) - base)
        return
    reset = _reset_cpu_peak()
    base = _vmhwm() if reset else 0
    yield lambda: max(0, _vmhwm() - base) if reset else 0


def _autocast(
    device: torch.device, precision: Precision
) -> contextlib.AbstractContextManager[object]:
    if precision is Precision.BF16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision is Precision.FP16:
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def build(
    config: MPRNetConfig, mode: Mode, device: torch.device, seed: int = 0
) -> Callable[[torch.Tensor], Any]:
    torch.manual_seed(seed)
    model = MPRNet(config).eval().requires_grad_(False)
    model.batched = mode.batched
    model.to(device=device)
    if mode.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fn: Callable[[torch.Tensor], Any] = torch.compile(model) if mode.compile else model
    return fn


def bench_one(
    task: str,
    config: MPRNetConfig,
    mode: Mode,
    device: torch.device,
    *,
    height: int,
    width: int,
    batch: int = 1,
    warmup: int = 1,
    repeat: int = 3,
    min_seconds: float = 2.0,
    macs: int | None = None,
) -> BenchResult:
    """Time one (network, mode): median of `repeat` timed runs after warm-up."""
    fn = build(config, mode, device)
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    x = torch.rand(batch, config.in_c, height, width, generator=torch.Generator().manual_seed(1))
    x = x.to(device).contiguous(memory_format=fmt)
    if macs is None:
        macs = count_macs(MPRNet(config), height, width)
    times: list[float] = []
    with torch.inference_mode(), _autocast(device, mode.precision), _peak_memory(device) as peak:
        t0 = time.perf_counter()
        fn(x)
        _sync(device)
        first = time.perf_counter() - t0
        for _ in range(max(0, warmup - 1)):
            fn(x)
        _sync(device)
        started = time.perf_counter()
        while len(times) < repeat or (
            time.perf_counter() - started < min_seconds and len(times) < 50
        ):
            t = time.perf_counter()
            fn(x)
            _sync(device)
            times.append(time.perf_counter() - t)
        peak_bytes = peak()
    times.sort()
    per_batch = times[len(times) // 2]
    per_image = per_batch / batch
    mp_s = height * width / per_image / 1e6
    return BenchResult(
        task=task,
        mode=mode.name,
        device=str(device),
        width=width,
        height=height,
        batch=batch,
        threads=torch.get_num_threads(),
        seconds_per_image=per_image,
        megapixels_per_second=mp_s,
        seconds_per_12mp=MEGAPIXELS_12 / (mp_s * 1e6),
        gmac_per_image=macs / 1e9,
        gflops=2 * macs / per_image / 1e9,
        peak_memory_bytes=peak_bytes,
        speedup_vs_reference=None,
        first_call_seconds=first,
    )


def run(
    tasks: list[str],
    modes: list[str],
    device: torch.device,
    *,
    height: int,
    width: int,
    batch: int = 1,
    repeat: int = 3,
    min_seconds: float = 2.0,
    configs: dict[str, MPRNetConfig] | None = None,
    on_result: Callable[[BenchResult], None] | None = None,
) -> list[BenchResult]:
    """Benchmark every task in every mode; the reference mode always runs first for the ratio."""
    configs = configs or PUBLISHED_CONFIGS
    wanted = ["reference", *[m for m in modes if m != "reference"]]
    results: list[BenchResult] = []
    for task in tasks:
        config = configs[task]
        macs = count_macs(MPRNet(config), height, width)
        reference_time: float | None = None
        for name in wanted:
            mode = MODES[name]
            if not supports_precision(device, mode.precision):
                continue
            result = bench_one(
                task,
                config,
                mode,
                device,
                height=height,
                width=width,
                batch=batch,
                repeat=repeat,
                min_seconds=min_seconds,
                macs=macs,
            )
            if name == "reference":
                reference_time = result.seconds_per_image
            if reference_time is not None:
                result = BenchResult(
                    **{
                        **asdict(result),
                        "speedup_vs_reference": reference_time / result.seconds_per_image,
                    }
                )
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results
