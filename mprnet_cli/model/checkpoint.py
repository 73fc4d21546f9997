"""Reading MPRNet weights safely, whatever container they come in.

Accepted: the published format (`{"state_dict": ...}` saved from DataParallel,
keys prefixed `module.`), a bare state dict, and `.safetensors`. Pickled files
are read with `weights_only=True`, so a checkpoint can never run code.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mprnet_cli.errors import CheckpointError, UnsafeCheckpointError
from mprnet_cli.model.config import MPRNetConfig, detect_config
from mprnet_cli.model.network import MPRNet

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "params_ema", "params", "model", "net")


@dataclass(frozen=True)
class Checkpoint:
    """A state dict with its detected configuration and any file metadata."""

    state_dict: dict[str, Tensor]
    config: MPRNetConfig
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: not an MPRNet checkpoint (it holds a {type(obj).__name__}, not a state dict)"
        )
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(v, Tensor) for v in inner.values())
        ):
            obj = inner
            break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path}: not an MPRNet checkpoint (no tensors; top-level keys: "
            f"{', '.join(map(str, list(obj)[:5])) or 'none'})"
        )
    return {k.removeprefix("module."): v for k, v in tensors.items()}


_UNSAFE = (
    "refused: besides tensors it holds Python objects{what}, and loading those means "
    "running whatever code the file names; mprnet reads tensors only. If you trust the "
    "file, save its state dict as .safetensors (docs/weights.md)"
)


def _read_pickle(path: Path) -> Any:
    with path.open("rb") as f:
        head = f.read(2)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither a zip archive nor a pickle
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint or .safetensors file (it starts with {head!r})"
        )
    # Zip-format files (torch >= 1.6) are memory-mapped: no copy of the weights in RAM.
    mmap = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():
            # torch warns about any pickle protocol it did not write itself; the safe
            # loader's verdict below is what the user needs, not this.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch's text advises weights_only=False, which is exactly what we refuse to do:
        # keep only its reason.
        text = str(exc)
        # torch >= 2.4 says "GLOBAL mod.name", older ones "Unsupported class mod.name".
        blocked = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", text)
        if blocked or "global" in text.lower():
            what = f" ({blocked.group(1)})" if blocked else ""
            raise UnsafeCheckpointError(f"{path}: {_UNSAFE.format(what=what)}") from exc
        reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint or .safetensors file (a pickle that "
            f"the safe loader cannot read: {reason.group(1) if reason else 'unsupported content'})"
        ) from exc
    except Exception as exc:  # torch raises a zoo of types for corrupt files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}"
        ) from exc


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        tensors: dict[str, Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable .safetensors file (truncated or corrupt?): {exc}"
        ) from exc
    return tensors, metadata


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    # Sniff: 8-byte little-endian header length, then a JSON object.
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read any supported weights file; raise `CheckpointError` with a reason if it is not MPRNet."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path}: is a folder; give the weights file in it (.pth, .pt or .safetensors)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    metadata: dict[str, str] = {}
    if _is_safetensors(path):
        raw, metadata = _read_safetensors(path)
        state = _unwrap(raw, path)
    else:
        state = _unwrap(_read_pickle(path), path)
    try:
        config = detect_config(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    if "config" in metadata:
        try:
            declared = MPRNetConfig.from_dict(json.loads(metadata["config"]))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable config in metadata: {exc}") from exc
        if declared != config:
            raise CheckpointError(
                f"{path}: metadata config {declared} disagrees with tensor shapes {config}"
            )
    return Checkpoint(state_dict=state, config=config, metadata=metadata, path=path)


def expected_shapes(config: MPRNetConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor an MPRNet of `config` holds, with its shape, without allocating it
    (the network is built on PyTorch's meta device: shapes only, no storage)."""
    with torch.device("meta"):
        model = MPRNet(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weights(checkpoint: Checkpoint) -> None:
    """Refuse weights that cannot build a working network, before anything is allocated.

    Every tensor's presence and shape is checked against the detected configuration
    (whose size `detect_config` has already bounded), so that a small hostile file
    declaring a huge network is refused before that network's memory is asked for;
    then every value must be finite (NaN weights would turn every output black).
    """
    expected = expected_shapes(checkpoint.config)
    state = checkpoint.state_dict
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(v.shape)} (expected {expected[k]})"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    where = f"{checkpoint.path}: " if checkpoint.path else ""
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} wrong shapes (e.g. {wrong[0]})")
        raise CheckpointError(
            f"{where}these weights do not fit an MPRNet ({'; '.join(parts)}); they may come from a "
            "modified architecture: use a checkpoint of the published MPRNet"
        )
    broken = next(
        (k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()),
        None,
    )
    if broken is not None:  # every output would be NaN: fail the run, not each image
        raise CheckpointError(
            f"{where}the weights hold NaN or infinite values (e.g. {broken}); the file is "
            "damaged or from a diverged training run: use another checkpoint"
        )


def check_rgb(checkpoint: Checkpoint) -> None:
    """mprnet restores RGB photos: refuse a network with other input or output channels."""
    config = checkpoint.config
    if (config.in_c, config.out_c) != (3, 3):
        where = f"{checkpoint.path}: " if checkpoint.path else ""
        raise CheckpointError(
            f"{where}this MPRNet maps {config.in_c} to {config.out_c} channels; mprnet "
            "restores RGB photos (3 to 3)"
        )


def check_file(path: str | Path) -> Checkpoint:
    """Read a weights file and refuse it unless it builds a working RGB network."""
    checkpoint = read_checkpoint(path)
    check_rgb(checkpoint)
    check_weights(checkpoint)
    return checkpoint


def build_model(checkpoint: Checkpoint) -> MPRNet:
    """An MPRNet in eval mode holding the checkpoint's weights (checked first)."""
    check_weights(checkpoint)
    model = MPRNet(checkpoint.config)
    model.load_state_dict(checkpoint.state_dict, strict=True)
    return model.eval()


def state_dict_for_saving(model: MPRNet) -> dict[str, Tensor]:
    """A state dict with no shared storage (safetensors refuses aliased tensors)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
