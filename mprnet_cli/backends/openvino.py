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
import shutil
import tempfile
import time
import warnings
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mprnet_cli.backends import BackendSpec, Notify
from mprnet_cli.backends.base import Batch, Capabilities, looks_like_oom
from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.choices import Precision
from mprnet_cli.device import available_memory, choose_precision
from mprnet_cli.errors import BackendError, UsageError
from mprnet_cli.weights import cache_root

# Bump when the exported graph changes for the same weights (network code, export recipe).
EXPORT_VERSION = 1
# Sides below this run in PyTorch: the exported graph disagrees with it when a stage-1
# quarter's deepest level is 1 pixel (8-px sides; max |delta| 0.1 on a tiny network).
MIN_SIDE = 16
_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16"}
# Unlike PyTorch (512-px tiles beat one pass there), OpenVINO bf16 restored a 1024x768
# image in one pass 1.10x and 1.39x faster than in 512-px tiles (two runs on a loaded
# 2-vCPU Xeon; benchmarks/results/cpu_tiles_openvino_bf16_*). Larger sides were not
# measured, so one pass stops at 1024 px and tiles at 1024 px; memory rules below that.
ONE_PASS_SIDE = 1024
MAX_TILE = 1024
_STATIC_SHAPES = 4  # compiled static-shape models kept per backend (tiles share a shape)


def _openvino() -> Any:
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


def load_or_export(model: nn.Module, notify: Notify | None = None) -> Any:
    """The converted model from the cache, or converted now and saved there (atomically)."""
    ov = _openvino()
    folder = model_dir(weights_key(model), ov.get_version())
    xml = folder / "model.xml"
    core = ov.Core()
    if xml.is_file():
        with contextlib.suppress(Exception):  # a damaged cache entry is converted again
            return core.read_model(xml)
    if notify is not None:
        notify("converting the network for OpenVINO (once per weights file; later runs reuse it)")
    start = time.perf_counter()
    try:
        converted = export(model)
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(
            f"OpenVINO could not convert the network ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    seconds = time.perf_counter() - start
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        try:
            # fp32 weights: both inference precisions compile from them (fp16-compressed
            # weights would add their own rounding to bf16 and fp32 runs alike).
            ov.save_model(converted, tmp / "model.xml", compress_to_fp16=False)
            (tmp / "export.json").write_text(
                json.dumps({"convert_seconds": round(seconds, 2), "openvino": ov.get_version()})
            )
            try:
                tmp.replace(folder)
            except OSError:
                if not xml.is_file():
                    raise  # else another process won the race: keep theirs
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        if notify is not None:
            notify(f"could not cache the converted network in {folder}: {exc}")
    return converted


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"


class OpenVinoBackend:
    """An exported MPRNet compiled for OpenVINO's CPU plugin at a precision hint.

    OpenVINO runs a model compiled for one static shape faster than the dynamic one
    (derain 256², loaded 2-core Xeon: 1.3x in fp32, 1.7x in bf16; README), but each
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
        memory: Any = None,
        threads: int | None = None,
        shapes: Literal["adaptive", "static", "dynamic"] = "adaptive",
    ) -> None:
        ov = _openvino()
        self.precision = choose_precision("cpu", precision)
        if self.precision not in _HINTS:
            raise UsageError(
                f"--precision {self.precision.value} is not supported by --backend openvino; "
                "use fp32 or bf16"
            )
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
        self.capabilities = Capabilities(
            align=8,
            precisions=frozenset(_HINTS),
            bytes_per_pixel=memory("cpu", self.precision) if memory else None,
            max_tile=MAX_TILE,
            one_pass_side=ONE_PASS_SIDE,
            can_fall_back=False,
        )

    @classmethod
    def create(cls, spec: BackendSpec, notify: Notify | None = None) -> OpenVinoBackend:
        return cls(
            load_or_export(spec.model, notify), spec.model, spec.precision, memory=spec.memory
        )

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
            while len(self._compiled) > _STATIC_SHAPES:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(shape)
        return compiled

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
