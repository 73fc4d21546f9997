"""`mprnet bench`: how fast each network runs here, against the reference execution.

Random weights are enough for timing (speed does not depend on the values).
Every result is measured in the same process and run as the reference mode it
is compared with, because these machines are noisy: only ratios from one run
are meaningful.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mprnet_cli.backends import BackendSpec, choose, create, descriptor
from mprnet_cli.backends.base import engine_modes
from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.choices import BackendChoice, Precision
from mprnet_cli.host.device import autocast, choose_precision, cpu_flags, supports_precision
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.model.network import MPRNet
from mprnet_cli.weights import published_configs

MEGAPIXELS_12 = 12e6
SPEED_FLAGS = frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
)


@dataclass(frozen=True)
class Mode:
    """One way of executing the same network (`auto` fields: what a restore run picks)."""

    name: str
    batched: bool
    channels_last: bool
    precision: Precision
    compile: bool = False
    backend: BackendChoice = BackendChoice.TORCH


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
    # every other engine at each precision its descriptor lists: openvino-fp32, ...
    **{
        name: Mode(name, batched=True, channels_last=True, precision=p, backend=backend)
        for name, (backend, p) in engine_modes().items()
    },
}


def default_mode(
    backend: BackendChoice = BackendChoice.AUTO, precision: Precision = Precision.AUTO
) -> Mode:
    """What `mprnet derain IMAGE --backend B --precision P` runs (with no flags: both auto)."""
    return Mode("default", batched=True, channels_last=True, precision=precision, backend=backend)


MODES["default"] = default_mode()


def resolve_mode(mode: Mode, device: torch.device) -> tuple[BackendChoice, Precision]:
    """The backend and precision a mode runs with on a device (`auto` resolved as a restore
    run resolves it)."""
    return choose(mode.backend, device.type, compile=mode.compile), choose_precision(
        device, mode.precision
    )


def available(mode: Mode, device: torch.device) -> bool:
    """Whether the mode can run on the device: its engine's descriptor (where it runs, at
    which precisions, whether it compiles), and for PyTorch what its autocast has there."""
    backend, precision = resolve_mode(mode, device)
    if descriptor(backend).problem(device.type, precision, compile=mode.compile) is not None:
        return False
    return backend is not BackendChoice.TORCH or supports_precision(device, precision)


@dataclass(frozen=True)
class BenchResult:
    task: str
    mode: str
    backend: str
    precision: str
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
    cpu_features: list[str] = field(default_factory=list)  # the ones that decide speed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def count_macs(config: MPRNetConfig, height: int, width: int) -> int:
    """Multiply-accumulates of every convolution in one forward pass of one image.

    Runs on the meta device: shapes only, no memory or arithmetic, at any image size.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        # The whole output: the batched fast path stacks stage-1 quarters and stage-2
        # halves along the batch dimension of this single image.
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    with torch.device("meta"):
        model = MPRNet(config).eval()
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, config.in_c, height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def status_bytes() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory in bytes; empty off Linux."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def maxrss_bytes() -> int:
    """Peak RSS of this process; ru_maxrss is KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_rss_bytes() -> int:
    return status_bytes().get("VmHWM") or maxrss_bytes()


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return "VmHWM" in status_bytes()


@contextlib.contextmanager
def _peak_memory(device: torch.device) -> Iterator[Callable[[], int]]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield lambda: int(torch.cuda.max_memory_allocated(device) - base)
        return
    reset = reset_peak()
    base = peak_rss_bytes() if reset else 0
    yield lambda: max(0, peak_rss_bytes() - base) if reset else 0


def build(
    config: MPRNetConfig, mode: Mode, device: torch.device, seed: int = 0
) -> Callable[[torch.Tensor], Any]:
    """A PyTorch mode's network placed exactly as a restore run places it; precision is
    applied by the caller's autocast, so timings include nothing but the forward pass."""
    torch.manual_seed(seed)
    model = MPRNet(config)
    model.batched = mode.batched
    return TorchBackend(
        model, device, channels_last=mode.channels_last, compile=mode.compile
    ).forward


@dataclass
class _Runner:
    """One mode of one network, ready to run; collects its timings."""

    mode: Mode
    backend: BackendChoice
    precision: Precision
    call: Callable[[], Any]
    first: float = 0.0
    peak: int = 0
    times: list[float] = field(default_factory=list)


def _prepare(
    config: MPRNetConfig, mode: Mode, device: torch.device, height: int, width: int, batch: int
) -> _Runner:
    backend, precision = resolve_mode(mode, device)
    x = torch.rand(batch, config.in_c, height, width, generator=torch.Generator().manual_seed(1))
    if backend is BackendChoice.TORCH:
        fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
        fn, xd = build(config, mode, device), x.to(device).contiguous(memory_format=fmt)

        def call() -> Any:
            with torch.inference_mode(), autocast(device, precision):
                return fn(xd)

    else:  # built by the registry, as a restore run builds it (conversion cached per weights)
        torch.manual_seed(0)
        engine = create(backend, BackendSpec(MPRNet(config), device, precision))
        backend = BackendChoice(engine.name)  # PyTorch, if OpenVINO could not run here
        xn = np.ascontiguousarray(x.numpy())

        def call() -> Any:
            return engine(xn)

    runner = _Runner(mode, backend, precision, call)
    with _peak_memory(device) as peak:
        t0 = time.perf_counter()
        runner.call()  # first call: allocation, autotuning, compilation
        _sync(device)
        runner.first = time.perf_counter() - t0
        runner.call()
        _sync(device)
        runner.peak = peak()
    return runner


def _time_once(runner: _Runner, device: torch.device) -> None:
    t = time.perf_counter()
    runner.call()
    _sync(device)
    runner.times.append(time.perf_counter() - t)


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
    default: Mode | None = None,
    on_task: Callable[[str, list[str]], None] | None = None,
) -> list[BenchResult]:
    """Benchmark every task in every mode; against the reference mode when it is one of them.

    The modes of a task are timed in interleaved rounds (reference, mode A,
    mode B, reference, ...) and the medians compared, so that a noisy
    neighbour or a clock change hits every mode alike. The reference mode is
    the slowest by far: it is timed only when asked for. `on_task(task, modes)`
    is called as each task starts, so a long run shows where it is.
    """
    configs = configs or published_configs()
    table = {**MODES, "default": default or MODES["default"]}
    features = sorted(cpu_flags() & SPEED_FLAGS)
    ref_first = ["reference"] if "reference" in modes else []
    wanted = [*ref_first, *dict.fromkeys(m for m in modes if m != "reference")]
    results: list[BenchResult] = []
    for task in tasks:
        config = configs[task]
        macs = count_macs(config, height, width)
        if on_task is not None:
            on_task(task, wanted)
        runners = [
            _prepare(config, table[name], device, height, width, batch)
            for name in wanted
            if available(table[name], device)
        ]
        started = time.perf_counter()
        rounds = 0
        while rounds < repeat or (time.perf_counter() - started < min_seconds and rounds < 50):
            for runner in runners:
                _time_once(runner, device)
            rounds += 1
        timed_ref = [r for r in runners if r.mode.name == "reference"]
        reference = statistics.median(timed_ref[0].times) / batch if timed_ref else None
        for runner in runners:
            per_image = statistics.median(runner.times) / batch
            mp_s = height * width / per_image / 1e6
            result = BenchResult(
                task=task,
                mode=runner.mode.name,
                backend=runner.backend.value,
                precision=runner.precision.value,
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
                peak_memory_bytes=runner.peak,
                speedup_vs_reference=None if reference is None else reference / per_image,
                first_call_seconds=runner.first,
                cpu_features=features,
            )
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results
