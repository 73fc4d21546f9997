"""Device and precision choice, memory queries and out-of-memory detection.

Kept apart from the pipeline so the policy ("auto picks the GPU when usable",
"bf16 only where it is measured to be safe") lives in one place.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import torch

from mprnet_cli.backends.base import BACKENDS
from mprnet_cli.choices import BackendChoice, Precision, device_spec
from mprnet_cli.errors import DeviceError, UsageError

__all__ = ["Precision", "resolve_device"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N|mps` into a usable device or raise `DeviceError`."""
    spec = device_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DeviceError(
                "--device mps: Apple's Metal backend is not available on this machine; use --device cpu"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"--device {spec}: no CUDA GPU is usable here (PyTorch {torch.__version__} "
            f"{'has no CUDA support' if torch.version.cuda is None else 'found no GPU'}); use --device cpu"
        )
    index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"--device {spec}: only {count} CUDA device(s) present (cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def available_memory(device: torch.device) -> int:
    """Bytes a new allocation can use now: free GPU memory, or available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        recommended = torch.mps.recommended_max_memory()
        return int(recommended - torch.mps.current_allocated_memory())
    return _available_ram()


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # unknown platform: assume a modest 4 GiB


FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """CPUs with native bf16 dot products (AVX-512 BF16 or AMX); elsewhere bf16 is emulated
    (25x slower than fp32 on an AVX2 CPU) and `auto` must not pick it."""
    return bool(cpu_flags() & FAST_BF16_FLAGS)


def supports_precision(device: torch.device, precision: Precision) -> bool:
    """Whether PyTorch computes in `precision` there: its descriptor's table (CPU autocast
    has bf16, fast only with native support), and bf16 only on CUDA GPUs that have it."""
    if precision in (Precision.FP32, Precision.AUTO):
        return True
    if not BACKENDS[BackendChoice.TORCH].supports(device.type, precision):
        return False
    if device.type == "cuda" and precision is Precision.BF16:
        return bool(torch.cuda.is_bf16_supported())
    return True


def choose_precision(device: torch.device | str, requested: Precision) -> Precision:
    """What `--precision auto` means on a device.

    bf16 on CUDA: 1.5-1.8x faster than the reference mode on an H200 and within
    54 dB PSNR of float32 on real photos for all three tasks (benchmarks/
    precision_check.py). bf16 on CPUs with native bf16 dot products (AVX-512 BF16,
    AMX): 2.4-3.4x faster than the reference mode and 55-67 dB from float32
    (docs/speed-and-memory.md, speed table). float32 elsewhere: CPUs without native bf16 emulate it,
    25x slower than float32.
    """
    if requested is not Precision.AUTO:
        return requested
    device = torch.device(device)
    if device.type == "cuda" and supports_precision(device, Precision.BF16):
        return Precision.BF16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return Precision.BF16
    return Precision.FP32


def fallback_precision(requested: Precision) -> Precision:
    """The precision to go on with on the CPU after a GPU ran out of memory: what
    `requested` means there (auto: bf16 only where the CPU has it natively), except fp16
    (no fast CPU kernels) and bf16 where the CPU only emulates it."""
    precision = choose_precision("cpu", requested)
    if precision is Precision.FP16 or (precision is Precision.BF16 and not cpu_has_fast_bf16()):
        return Precision.FP32
    return precision


def check_precision(device: torch.device, precision: Precision) -> None:
    if not supports_precision(device, precision):
        raise UsageError(f"--precision {precision.value} is not supported on {device}; use fp32")


def autocast(
    device: torch.device, precision: Precision
) -> contextlib.AbstractContextManager[object]:
    """The autocast context for a precision (nothing for fp32)."""
    if precision is Precision.BF16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision is Precision.FP16:
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


@functools.cache
def _physical_cores() -> int:
    """torch's own default thread count (one per physical core), read before we change it."""
    return torch.get_num_threads()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _other_runnable(samples: int = 3, pause: float = 0.01) -> int | None:
    """Threads of other processes running or waiting for a CPU right now (the 4th field
    of /proc/loadavg, less this one), the least of a few samples; None off Linux."""
    seen = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                runnable = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        seen.append(max(0, runnable - 1))
        if i + 1 < samples:
            time.sleep(pause)
    return min(seen)


def default_threads(cores: int | None = None, busy: int | None = None) -> int:
    """One thread per physical core that nothing else is using right now.

    A thread per core is fastest on an idle machine, but on a busy one every parallel
    region waits for a thread that is queued behind another process: a small image
    took 3.3 s instead of 0.05 s. Threads beyond the idle cores buy nothing, so the
    default counts the other runnable threads once, when the network is loaded
    (benchmarks/bench_threads.py).
    """
    cores = _physical_cores() if cores is None else cores
    busy = _other_runnable() if busy is None else busy
    if busy is None:
        return cores
    return max(1, min(cores, _usable_cpus() - busy))


def set_threads(threads: int | None) -> None:
    """Apply --threads, or the load-aware default (`default_threads`) unless the user set
    OMP_NUM_THREADS, which torch already obeys."""
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        threads = default_threads()
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    torch.set_num_threads(threads)
