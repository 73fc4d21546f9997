"""The Backend protocol and one descriptor per backend.

A backend takes a float32 NCHW batch (values in [0, 1], sides a multiple of its
alignment) and returns the restored float32 NCHW batch. Everything the tile loop
and out-of-memory recovery must know is in its `Capabilities`, so `pipeline.py`
never asks which engine it is running. Everything the registry, the API, `mprnet bench`
and the CLI must know before an engine is imported (where it runs, at which precisions,
whether it compiles, whether it is installed, its rank for `--backend auto`, its memory
per pixel) is in its `BackendDescriptor` in `BACKENDS` (the shape of spandrel's
descriptors). Light: no torch, numpy or engine import here, so the CLI's help and
validation read the descriptors for free.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

from mprnet_cli.choices import BackendChoice, Precision, spoken_list
from mprnet_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

Batch: TypeAlias = "NDArray[np.float32]"
#: Where a backend reports a one-line notice (a fallback, a conversion step).
Notify = Callable[[str], None]
#: Peak bytes per input pixel for a device type and precision (`api.Restorer` measures it).
MemoryCost = Callable[[str, Precision], float]

#: How help and errors name each device type a backend may run on.
DEVICE_NAMES: Final = {"cpu": "the CPU", "cuda": "CUDA GPUs", "mps": "Apple GPUs (MPS)"}


def package_installed(name: str) -> bool:
    """Whether a package can be imported, without importing it (openvino: ~0.3 s)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def load(ref: str) -> Any:
    """The object a "package.module:Name.attr" reference names, importing it only now."""
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class BackendDescriptor:
    """What is known about an inference engine before it is imported.

    `precisions`: by device type; its keys are the devices it runs on. `factory` and
    `auto_factory` ("module:callable", called with a `BackendSpec` and a `Notify`) build
    it for `--backend NAME` and for `--backend auto`; `memory` ("module:callable", called
    with a network config, a precision and a device type) estimates peak bytes per input
    pixel. `auto_rank`: `--backend auto` takes the lowest rank that runs on the device,
    supports the options asked for and is installed (None: never chosen by auto).
    `package`: what `installed()` looks for (None: a core dependency, always there).
    """

    choice: BackendChoice
    label: str
    precisions: Mapping[str, frozenset[Precision]]
    factory: str
    memory: str
    compile: bool = False
    auto_rank: int | None = None
    auto_factory: str | None = None
    package: str | None = None

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.precisions)

    @property
    def name(self) -> str:
        return self.choice.value

    def installed(self) -> bool:
        return self.package is None or package_installed(self.package)

    def runs_on(self, device_type: str) -> bool:
        return device_type in self.precisions

    def supports(self, device_type: str, precision: Precision) -> bool:
        """Whether it computes in `precision` on the device (AUTO: always, it is resolved)."""
        if not self.runs_on(device_type):
            return False
        return precision is Precision.AUTO or precision in self.precisions[device_type]

    def only_device(self) -> str | None:
        """The one device type it runs on (what `--device auto` means for it), else None."""
        return self.devices[0] if len(self.devices) == 1 else None

    def bytes_per_pixel(self, config: Any, device_type: str, precision: Precision) -> float:
        """Estimated peak memory of one forward pass per input pixel (for `--tile auto`)."""
        return float(load(self.memory)(config, precision, device_type))

    def problem(
        self, device_type: str, precision: Precision = Precision.AUTO, *, compile: bool = False
    ) -> str | None:
        """Why it cannot run as asked, as a message that says what to do (None: it can)."""
        if not self.runs_on(device_type):
            others = [d.name for d in BACKENDS.values() if d.runs_on(device_type)]
            where = spoken_list([DEVICE_NAMES.get(d, d) for d in self.devices])
            hint = f"use --device {self.devices[0]}"
            if others:
                hint += f" or --backend {spoken_list(others)}"
            return f"--backend {self.name} runs on {where}, not {device_type}; {hint}"
        if compile and not self.compile:
            labels = spoken_list([d.label for d in BACKENDS.values() if d.compile])
            names = spoken_list([d.name for d in BACKENDS.values() if d.compile])
            return f"--compile is a {labels} option; use --backend {names} with it"
        if not self.supports(device_type, precision):
            valid = spoken_list([p.value for p in Precision if p in self.precisions[device_type]])
            return (
                f"--precision {precision.value} is not supported by --backend {self.name} "
                f"on {DEVICE_NAMES.get(device_type, device_type)}; use {valid}"
            )
        return None

    def check(
        self, device_type: str, precision: Precision = Precision.AUTO, *, compile: bool = False
    ) -> None:
        problem = self.problem(device_type, precision, compile=compile)
        if problem is not None:
            raise UsageError(problem)


#: Every backend, declared once. `--backend auto` tries them by `auto_rank`; PyTorch runs
#: on every device and is always installed, so it is where every other one falls back to.
BACKENDS: Final[dict[BackendChoice, BackendDescriptor]] = {
    BackendChoice.OPENVINO: BackendDescriptor(
        BackendChoice.OPENVINO,
        "OpenVINO",
        # OpenVINO's CPU plugin only; fp16 is not a CPU inference precision there.
        precisions={"cpu": frozenset({Precision.FP32, Precision.BF16})},
        factory="mprnet_cli.backends.openvino:OpenVinoBackend.create",
        # faster than PyTorch on the CPU in both precisions (docs/speed-and-memory.md, speed
        # table); its auto factory still runs PyTorch for compact or unconverted networks
        auto_factory="mprnet_cli.backends.openvino:create_auto",
        memory="mprnet_cli.backends.openvino:bytes_per_pixel",
        auto_rank=0,
        package="openvino",
    ),
    BackendChoice.TORCH: BackendDescriptor(
        BackendChoice.TORCH,
        "PyTorch",
        precisions={
            "cpu": frozenset({Precision.FP32, Precision.BF16}),
            "cuda": frozenset({Precision.FP32, Precision.BF16, Precision.FP16}),
            "mps": frozenset({Precision.FP32, Precision.FP16}),
        },
        factory="mprnet_cli.backends.torch:create",
        memory="mprnet_cli.inference.pipeline:estimate_bytes_per_pixel",
        compile=True,
        auto_rank=1,
    ),
}
#: The backend that runs everywhere: what an engine that cannot start gives way to.
FALLBACK: Final = BackendChoice.TORCH


def descriptor(choice: BackendChoice) -> BackendDescriptor:
    """The descriptor of a named backend (`auto` is resolved first: `backends.choose`)."""
    if choice is BackendChoice.AUTO:
        raise ValueError("resolve --backend auto with backends.choose first")
    return BACKENDS[choice]


def auto_help() -> str:
    """What `--backend auto` picks, in words: "OpenVINO on the CPU when installed, else PyTorch"."""
    phrases = []
    for d in sorted(
        (d for d in BACKENDS.values() if d.auto_rank is not None),
        key=lambda d: d.auto_rank or 0,
    ):
        phrase = d.label
        if set(d.devices) != set(DEVICE_NAMES):
            phrase += f" on {spoken_list([DEVICE_NAMES.get(x, x) for x in d.devices])}"
        if d.package is not None:
            phrase += " when installed"
        phrases.append(phrase)
    return ", else ".join(phrases)


def engine_modes() -> dict[str, tuple[BackendChoice, Precision]]:
    """`mprnet bench` modes that run another engine than PyTorch at a fixed precision
    ("openvino-fp32", ...), one per precision it supports on any device."""
    out: dict[str, tuple[BackendChoice, Precision]] = {}
    for d in BACKENDS.values():
        if d.choice is FALLBACK:
            continue  # PyTorch's modes are bench's own (fp32, bf16, +compile, ...)
        held = set().union(*d.precisions.values())
        for p in Precision:
            if p in held:
                out[f"{d.name}-{p.value}"] = (d.choice, p)
    return out


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
