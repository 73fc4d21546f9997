"""The OpenVINO backend: MPRNet exported once per checkpoint, run by OpenVINO's CPU plugin.

The only module that imports openvino. Export goes through `torch.export` with
symbolic height and width (multiples of 8) and batch, so the network's split
points (`h // 2`, `w // 2`) stay shape expressions: TorchScript tracing froze
them as constants (wrong results at other sizes) and failed on this package's
module anyway. The converted model is saved under the mprnet cache keyed by the
weights' hash, the stored weight precision and the OpenVINO version, so later
runs read it back in about a second instead of converting again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Literal

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
from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.choices import BackendChoice, Precision
from mprnet_cli.errors import BackendError
from mprnet_cli.host.device import available_memory, choose_precision
from mprnet_cli.host.paths import cache_root
from mprnet_cli.model.config import MPRNetConfig

# Bump when the exported graph changes for the same weights (network code, export recipe).
EXPORT_VERSION = 1
# Sides below this run in PyTorch: the exported graph disagrees with it when a stage-1
# quarter's deepest level is 1 pixel (8-px sides; max |delta| 0.1 on a tiny network).
MIN_SIDE = 16
_SELF = BACKENDS[BackendChoice.OPENVINO]  # where it runs and at which precisions
_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16"}  # OpenVINO's names for them
# Unlike PyTorch (512-px tiles beat one pass there), OpenVINO bf16 restored a 1024x768
# image in one pass 1.10x and 1.39x faster than in 512-px tiles (two runs on a loaded
# 2-vCPU Xeon; benchmarks/results/cpu_tiles_openvino_bf16_*). Larger sides were not
# measured, so one pass stops at 1024 px and tiles at 1024 px; memory rules below that.
ONE_PASS_SIDE = 1024
MAX_TILE = 1024
_STATIC_SHAPES = 4  # compiled static-shape models kept per backend (tiles share a shape)


def _no_telemetry() -> None:
    """Keep OpenVINO's telemetry client out: its converter imports `openvino_telemetry`
    when present, which writes a client id and counters under ~/intel on first use. The
    converter falls back to its own no-op stub when that import fails, so the module is
    marked absent (unless something else in this process imported it already)."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


# Peak RSS of one OpenVINO pass per input pixel, per channel of the full-resolution
# stage (n_feat + scale_orsnetfeats), the form `pipeline.estimate_bytes_per_pixel` uses for
# PyTorch; PyTorch's figures, used before, were never measured for OpenVINO (they were
# 1.6x too high in fp32, 5% too low in bf16 for derain). Measured: the slope of peak RSS
# between one-pass 128- and 256-px images, one fresh process each, published derain
# width: 3391 B/px fp32, 3375 bf16 (60.5 per channel); 256 to 512 px, bf16: 3226
# (benchmarks/bench_openvino_first_run.py, results/openvino_memory.json; a 2-core EPYC
# without native bf16, where OpenVINO computes a bf16 hint in f32: on CPUs with it, bf16
# needs less, so the f32 figure is a safe bound for both).
_BYTES_PER_CHANNEL = {Precision.BF16: 60.5, Precision.FP32: 60.5}
_MARGIN = 1.1


def bytes_per_pixel(config: MPRNetConfig, precision: Precision, device_type: str = "cpu") -> float:
    """What one OpenVINO pass costs per input pixel, for `pipeline.auto_tile` (the
    descriptor's `memory`; OpenVINO runs on the CPU only, so `device_type` is unused)."""
    per_channel = _BYTES_PER_CHANNEL.get(precision, _BYTES_PER_CHANNEL[Precision.FP32])
    return float(_MARGIN * per_channel * (config.n_feat + config.scale_orsnetfeats))


def _openvino() -> Any:
    _no_telemetry()
    try:
        import openvino
    except Exception as exc:  # ImportError, or a broken install failing at import
        raise BackendError(
            f"OpenVINO is not usable ({type(exc).__name__}: {exc}); "
            "install it with `pip install openvino`"
        ) from None
    return openvino


class _Restored(nn.Module):
    """The restored image only (stage outputs are not needed and would cost transfers)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)[0]
        return out


def weights_key(model: nn.Module) -> str:
    """sha256 of the configuration and every tensor's name, shape and bytes."""
    digest = hashlib.sha256(f"mprnet-export-{EXPORT_VERSION}".encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    if not getattr(model, "cut_input", True):
        digest.update(b"uncut")  # another graph on the same weights (`--split-lines fix`)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def model_dir(key: str, version: str) -> Path:
    """Where one converted network lives: weights hash, stored precision, OpenVINO version."""
    safe_version = "".join(c if c.isalnum() or c in ".-" else "_" for c in version.split("-")[0])
    return cache_root() / "openvino" / f"{key[:32]}-fp32-ov{safe_version}"


def export(model: nn.Module) -> Any:
    """Convert an MPRNet (batched fast path) to an OpenVINO model with dynamic H and W."""
    ov = _openvino()
    from torch.export import Dim
    from torch.export import export as torch_export

    model = model.float().cpu().eval()
    old = getattr(model, "batched", None)
    if old is not None:
        model.batched = True  # type: ignore[assignment]
    try:
        # Batch 1 (a symbolic batch breaks export's guards on the quarter/half stacking;
        # batches of tiles run one image at a time). 24x32: no side quotient is 0 or 1,
        # so none is specialised to a constant.
        hq, wq = Dim("hq", min=1, max=4096), Dim("wq", min=1, max=4096)
        example = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
        # torch.export and the converter warn about their own internals (deprecations,
        # tracing notes): nothing a user can act on.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch_export(
                _Restored(model), (example,), dynamic_shapes={"x": {2: 8 * hq, 3: 8 * wq}}
            )
            return ov.convert_model(program)
    finally:
        if old is not None:
            model.batched = old


# Files of one cache entry; `_RECORD` holds their sha256 and is written last, so an entry
# without it is incomplete (a killed save).
_FILES = ("model.xml", "model.bin")
_RECORD = "export.json"
# A temp folder (`.tmp-*`, `.old-*`) this old belongs to no live save: saving takes seconds.
STALE_SECONDS = 600.0


def entry_problem(folder: Path) -> str | None:
    """Why a cache entry cannot be used as it is (None: complete and matching its digests).

    Each file's hash is remembered per file version (`weights.file_sha256`: size, mtime,
    inode, ctime), so an entry is read in full once, and again only after it changed.
    """
    from mprnet_cli.weights import file_sha256

    if not folder.is_dir():
        return "is not a folder"
    try:
        record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
        digests = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "is incomplete (no digest record)"
    for name in _FILES:
        path = folder / name
        if not path.is_file():
            return f"lacks {name}"
        try:
            if file_sha256(path) != digests.get(name):
                return f"has a {name} that does not match its digest (damaged or altered)"
        except OSError as exc:
            return f"has an unreadable {name} ({exc.strerror or exc})"
    return None


def read_cached(folder: Path, notify: Notify | None = None) -> Any | None:
    """The verified converted model in `folder`, else None (saying why, if it is there)."""
    if not os.path.lexists(folder):
        return None
    problem = entry_problem(folder)
    if problem is None:
        try:
            return _openvino().Core().read_model(folder / "model.xml")
        except Exception as exc:  # matching digests, yet unreadable (another OpenVINO?)
            problem = f"cannot be read ({_first_line(exc)})"
    if notify is not None:
        notify(f"the cached OpenVINO model {folder} {problem}; converting it again")
    return None


def load_or_export(model: nn.Module, notify: Notify | None = None) -> Any:
    """The converted model from the cache (verified), or converted now and saved there."""
    ov = _openvino()
    folder = model_dir(weights_key(model), ov.get_version())
    cached = read_cached(folder, notify)
    if cached is not None:
        return cached
    converted, seconds = convert_timed(model, notify)
    save(converted, folder, seconds, notify)
    return converted


def convert_timed(model: nn.Module, notify: Notify | None = None) -> tuple[Any, float]:
    """`export`, shown as a labelled step with its elapsed time (it takes 5-90 s)."""
    if notify is not None:
        notify("converting the network for OpenVINO (once per weights file; later runs reuse it)")
    start = time.perf_counter()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(_TICK_SECONDS):
            if notify is not None:
                notify(f"converting for OpenVINO: {time.perf_counter() - start:.0f} s so far")

    ticker = threading.Thread(target=tick, name="mprnet-convert-tick", daemon=True)
    ticker.start()
    try:
        converted = export(model)
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(
            f"OpenVINO could not convert the network ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    finally:
        done.set()
        ticker.join()
    seconds = time.perf_counter() - start
    if notify is not None:
        notify(f"converted for OpenVINO in {seconds:.1f} s")
    return converted, seconds


_TICK_SECONDS = 15.0


def clean_stale(parent: Path, max_age: float = STALE_SECONDS) -> None:
    """Remove the temp folders of saves that a killed run left behind (and old entries
    moved aside) once `max_age` seconds old, and background conversion jobs once an hour
    old; young ones may belong to a live process."""
    now = time.time()
    with contextlib.suppress(OSError):
        for item in parent.iterdir():
            if item.name.startswith((".tmp-", ".old-")):
                age = max_age
            elif item.name.startswith(_JOB_PREFIX):
                age = max(max_age, STALE_JOB_SECONDS)
            else:
                continue
            with contextlib.suppress(OSError):
                if now - item.lstat().st_mtime >= age:
                    _remove(item)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _install(tmp: Path, folder: Path) -> None:
    """Put a complete entry in place. Absent: one atomic rename. Damaged (or a file where
    the folder belongs): moved aside first, then the rename, so a reader sees the damaged
    entry, nothing, or the new one, never a mix; the damaged one is then removed."""
    try:
        tmp.rename(folder)
        return
    except OSError:
        if folder.is_dir() and entry_problem(folder) is None:
            return  # another process saved the same entry meanwhile: keep theirs
    aside = folder.parent / f".old-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
    with contextlib.suppress(FileNotFoundError):
        folder.rename(aside)
    tmp.rename(folder)
    _remove(aside)


def save(converted: Any, folder: Path, seconds: float, notify: Notify | None = None) -> bool:
    """Save a converted model as a cache entry with its digests; False (with one notice)
    when the cache cannot be written: read-only, not a folder, or full (OpenVINO's
    `save_model` raises RuntimeError there). The run goes on with the model in memory."""
    from mprnet_cli.weights import sha256_file

    ov = _openvino()
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(folder.parent)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        # fp32 weights: both inference precisions compile from them (fp16-compressed
        # weights would add their own rounding to bf16 and fp32 runs alike).
        ov.save_model(converted, tmp / "model.xml", compress_to_fp16=False)
        record = {
            "convert_seconds": round(seconds, 2),
            "openvino": ov.get_version(),
            "sha256": {name: sha256_file(tmp / name) for name in _FILES},
        }
        (tmp / _RECORD).write_text(json.dumps(record), encoding="utf-8")
        _install(tmp, folder)
        return True
    except (OSError, RuntimeError) as exc:
        if notify is not None:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
            notify(
                f"could not write the OpenVINO cache in {folder.parent} "
                f"({reason or _first_line(exc)}); using the converted network from "
                "memory (the next run converts again)"
            )
        return False
    finally:
        if tmp is not None:
            _remove(tmp)


# --------------------------------------------------------------------------- `--backend auto`

# `auto` on the CPU runs OpenVINO only for networks at least this wide (n_feat): the
# published ones, where OpenVINO bf16 ran 1.7-2.0x PyTorch bf16 (engine notes, 1024x768).
# The compact bundled networks (n_feat 24-32) were as fast with PyTorch end to end, once
# OpenVINO's read + compile (~1.9 s a process) is counted: 1.5-MP bundled derain, 7.8 s
# PyTorch bf16 against 8.7 s OpenVINO (issue 23; benchmarks/bench_openvino_first_run.py).
AUTO_MIN_WIDTH = 40
# A conversion job whose lock folder is this old died with its process.
STALE_JOB_SECONDS = 3600.0
_JOB_PREFIX = ".converting-"
# In a job folder: convert the network with `cut_input=False`.
_UNCUT = "uncut"


def create_auto(spec: BackendSpec, notify: Notify | None = None) -> Any:
    """What `--backend auto` runs on the CPU where OpenVINO is installed.

    Never slower on a first run than PyTorch: a network not yet converted restores with
    PyTorch, while a low-priority background process converts it for the next runs
    (conversion took 20-90 s, longer than most jobs it would serve). A converted network
    in the cache runs on OpenVINO; compact networks always run on PyTorch.
    """
    model = spec.model
    torch_backend = TorchBackend(model, torch.device("cpu"), spec.precision, memory=spec.memory)
    config = getattr(model, "config", None)
    if config is None or config.n_feat < AUTO_MIN_WIDTH:
        return torch_backend
    ov = _openvino()
    folder = model_dir(weights_key(model), ov.get_version())
    cached = read_cached(folder, notify)
    if cached is not None:
        return OpenVinoBackend(cached, model, spec.precision)
    if convert_in_background(model, folder) and notify is not None:
        notify(
            "restoring with PyTorch this time; the network is being converted for OpenVINO "
            "in the background (low priority), and later runs use it"
        )
    return torch_backend


def convert_in_background(model: nn.Module, folder: Path) -> bool:
    """Start a detached, low-priority process that converts `model` into `folder`; False
    when one is already at it or the cache cannot be written (the run is unaffected)."""
    from safetensors.torch import save_file

    from mprnet_cli.model.checkpoint import state_dict_for_saving

    parent = folder.parent
    job = parent / f"{_JOB_PREFIX}{folder.name}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(parent)
        job.mkdir()  # the lock: one converter per entry
    except OSError:
        return False
    try:
        save_file(state_dict_for_saving(model), str(job / "weights.safetensors"))  # type: ignore[arg-type]
        if not getattr(model, "cut_input", True):
            (job / _UNCUT).touch()
        code = "from mprnet_cli.backends.openvino import _background_main; _background_main()"
        subprocess.Popen(
            [sys.executable, "-c", code, str(job), str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives this run; Ctrl-C here does not stop it
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    except (OSError, RuntimeError):
        shutil.rmtree(job, ignore_errors=True)
        return False
    return True


def convert_job(job: Path, folder: Path) -> bool:
    """The background conversion: the weights left in `job`, converted and saved into
    `folder`; the job folder is removed whatever happens."""
    from mprnet_cli.model.checkpoint import build_model, read_checkpoint

    try:
        model = build_model(read_checkpoint(job / "weights.safetensors"))
        model.cut_input = not (job / _UNCUT).exists()
        start = time.perf_counter()
        converted = export(model)
        return save(converted, folder, time.perf_counter() - start)
    except Exception:  # nobody to tell: the next run tries again
        return False
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _background_main() -> None:
    with contextlib.suppress(OSError):
        os.nice(19)  # only the CPU time restoring runs leave idle
    torch.set_num_threads(1)
    convert_job(Path(sys.argv[1]), Path(sys.argv[2]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"


class OpenVinoBackend:
    """An exported MPRNet compiled for OpenVINO's CPU plugin at a precision hint.

    OpenVINO runs a model compiled for one static shape faster than the dynamic one
    (derain 256², loaded 2-core Xeon: 1.3x in fp32, 1.7x in bf16; docs/speed-and-memory.md), but each
    compilation costs about a second. So `shapes="adaptive"` (default) runs a shape's
    first batch on the dynamic model and compiles a static one when the shape comes
    back: the tiles of a large image, or a folder of same-size photos. "static" and
    "dynamic" force one or the other (benchmarks).
    """

    name = "openvino"
    device = "cpu"

    def __init__(
        self,
        converted: Any,
        model: nn.Module,
        precision: Precision = Precision.AUTO,
        *,
        threads: int | None = None,
        shapes: Literal["adaptive", "static", "dynamic"] = "adaptive",
    ) -> None:
        ov = _openvino()
        self.precision = choose_precision("cpu", precision)
        _SELF.check("cpu", self.precision)
        self._core = ov.Core()
        self._config = {
            "INFERENCE_PRECISION_HINT": _HINTS[self.precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        }
        self._model = converted
        self._shapes = shapes
        self._seen: Counter[tuple[int, ...]] = Counter()
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._dynamic = (
            None if shapes == "static" else self._core.compile_model(converted, "CPU", self._config)
        )
        # Tiny inputs (any side < MIN_SIDE) go to PyTorch on the same weights.
        self._small = TorchBackend(model, torch.device("cpu"), self.precision)
        config = getattr(model, "config", None)
        self.capabilities = Capabilities(
            align=8,
            precisions=_SELF.precisions["cpu"],
            bytes_per_pixel=(
                None if config is None else _SELF.bytes_per_pixel(config, "cpu", self.precision)
            ),
            max_tile=MAX_TILE,
            one_pass_side=ONE_PASS_SIDE,
            can_fall_back=False,
        )

    @classmethod
    def create(cls, spec: BackendSpec, notify: Notify | None = None) -> OpenVinoBackend:
        return cls(load_or_export(spec.model, notify), spec.model, spec.precision)

    def _compiled_for(self, shape: tuple[int, ...]) -> Any:
        self._seen[shape] += 1
        compiled = self._compiled.get(shape)
        first_time = self._seen[shape] < 2
        if (
            compiled is None
            and self._dynamic is not None
            and (self._shapes == "dynamic" or first_time)
        ):
            return self._dynamic
        if compiled is None:
            model = self._model.clone()
            model.reshape(list(shape))
            compiled = self._core.compile_model(model, "CPU", self._config)
            self._compiled[shape] = compiled
            self._evict()
        else:
            self._compiled.move_to_end(shape)
        return compiled

    def _evict(self) -> None:
        """Each compiled static model keeps its own activation buffers for its shape: keep
        at most `_STATIC_SHAPES`, and beyond the newest only as many as fit in a third of
        the memory free now (a folder of many large photo sizes must not pile them up)."""
        bpp = self.capabilities.bytes_per_pixel or 0.0
        budget = self.free_memory() / 3

        def held() -> float:
            return sum(shape[-1] * shape[-2] * bpp for shape in self._compiled)

        while len(self._compiled) > _STATIC_SHAPES or (len(self._compiled) > 1 and held() > budget):
            self._compiled.popitem(last=False)

    def __call__(self, batch: Batch) -> Batch:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if min(x.shape[2:]) < MIN_SIDE:
            return self._small(x)
        compiled = self._compiled_for((1, *x.shape[1:]))
        outs = [np.asarray(compiled(x[i : i + 1])[0], dtype=np.float32) for i in range(len(x))]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def free_memory(self) -> int:
        return available_memory(torch.device("cpu"))

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return looks_like_oom(exc)

    def release_memory(self) -> None:
        self._compiled.clear()

    def fall_back(self) -> None:
        raise AssertionError("the OpenVINO backend already runs on the CPU")

    def ignore_speed_limits(self) -> None:
        self.capabilities = Capabilities(
            align=self.capabilities.align,
            precisions=self.capabilities.precisions,
            bytes_per_pixel=self.capabilities.bytes_per_pixel,
            can_fall_back=False,
        )
