"""MPRNet hyper-parameters and their detection from a state dict.

Any MPRNet checkpoint, published or trained by us, carries everything needed
to rebuild its network in its tensor shapes; detecting the configuration means
users never pass architecture flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from mprnet_cli.errors import CheckpointError


class _Shaped(Protocol):
    @property
    def shape(self) -> Any: ...


@dataclass(frozen=True)
class MPRNetConfig:
    """The hyper-parameters of one MPRNet (names follow the reference code)."""

    in_c: int = 3
    out_c: int = 3
    n_feat: int = 40
    scale_unetfeats: int = 20
    scale_orsnetfeats: int = 16
    num_cab: int = 8
    kernel_size: int = 3
    reduction: int = 4
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("in_c", "out_c", "n_feat", "num_cab", "kernel_size", "reduction"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.scale_unetfeats < 0 or self.scale_orsnetfeats < 0:
            raise ValueError("scale_unetfeats and scale_orsnetfeats must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MPRNetConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MPRNet config keys: {', '.join(unknown)}")
        return cls(**dict(data))

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel widths of every channel-attention layer (for reduction checks)."""
        n, s, o = self.n_feat, self.scale_unetfeats, self.scale_orsnetfeats
        return (n, n + s, n + 2 * s, n + o)


# Tensors whose shapes pin down the configuration; a checkpoint lacking them is
# not an MPRNet checkpoint.
_REQUIRED = (
    "shallow_feat1.0.weight",
    "shallow_feat1.1.CA.conv_du.0.weight",
    "stage1_encoder.down12.down.1.weight",
    "stage3_orsnet.orb1.body.0.CA.conv_du.0.weight",
    "tail.weight",
)
_CA_SQUEEZE = re.compile(r"\.CA\.conv_du\.0\.weight$")
_ORB_BLOCK = re.compile(r"^stage3_orsnet\.orb1\.body\.(\d+)\.")


# The largest network a checkpoint may describe: twice the widest published one (deblur:
# n_feat 96, scale_unetfeats 48, scale_orsnetfeats 32, 8 CABs) in each dimension. A
# configuration is read from a few tensor shapes, so without a bound a small hostile file
# could declare a network of many gigabytes (n_feat 4096: ~10 GB) before any check runs.
LIMITS = {
    "in_c": 4,
    "out_c": 4,
    "n_feat": 192,
    "scale_unetfeats": 128,
    "scale_orsnetfeats": 128,
    "num_cab": 16,
    "kernel_size": 7,
}


def check_limits(values: Mapping[str, int]) -> None:
    """Refuse a configuration larger than any MPRNet mprnet restores with."""
    over = [f"{k} {values[k]} > {v}" for k, v in LIMITS.items() if values.get(k, 0) > v]
    if over:
        raise CheckpointError(
            f"not a supported MPRNet checkpoint: its tensors describe a network larger than "
            f"mprnet accepts ({', '.join(over)}); use a checkpoint of the published MPRNet"
        )


def _describe(keys: list[str]) -> str:
    sample = ", ".join(repr(k) for k in keys[:3])
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"{len(keys)} tensors ({sample}{more})" if keys else "no tensors"


def detect_config(state_dict: Mapping[str, _Shaped]) -> MPRNetConfig:
    """Infer the configuration from tensor shapes (keys without any `module.` prefix).

    Raises `CheckpointError` naming what is missing when the tensors are not
    those of an MPRNet.
    """
    keys = list(state_dict)
    missing = [k for k in _REQUIRED if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"not an MPRNet checkpoint: it holds {_describe(keys)} but lacks "
            + ", ".join(repr(k) for k in missing[:3])
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        )
    try:
        n_feat, in_c, k, k2 = (int(d) for d in state_dict["shallow_feat1.0.weight"].shape)
        out_c, width3, _, _ = (int(d) for d in state_dict["tail.weight"].shape)
        down_out, down_in, _, _ = (
            int(d) for d in state_dict["stage1_encoder.down12.down.1.weight"].shape
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"not an MPRNet checkpoint: unexpected tensor ranks ({exc})") from exc
    if k != k2 or down_in != n_feat:
        raise CheckpointError("not an MPRNet checkpoint: inconsistent convolution shapes")

    blocks = {int(m.group(1)) for key in keys if (m := _ORB_BLOCK.match(key))}
    # ORB body = num_cab CABs then one conv, so the highest index is num_cab.
    num_cab = max(blocks) if blocks else 0
    if num_cab < 1:
        raise CheckpointError(
            "not an MPRNet checkpoint: stage-3 ORB has no channel-attention blocks"
        )

    check_limits(
        {
            "in_c": in_c,
            "out_c": out_c,
            "n_feat": n_feat,
            "scale_unetfeats": down_out - n_feat,
            "scale_orsnetfeats": width3 - n_feat,
            "num_cab": num_cab,
            "kernel_size": k,
        }
    )
    squeezes = [
        (int(t.shape[1]), int(t.shape[0]))
        for key, t in state_dict.items()
        if _CA_SQUEEZE.search(key)
    ]
    reduction = _detect_reduction(squeezes)

    try:
        config = MPRNetConfig(
            in_c=in_c,
            out_c=out_c,
            n_feat=n_feat,
            scale_unetfeats=down_out - n_feat,
            scale_orsnetfeats=width3 - n_feat,
            num_cab=num_cab,
            kernel_size=k,
            reduction=reduction,
            bias="shallow_feat1.0.bias" in state_dict,
        )
    except ValueError as exc:
        raise CheckpointError(f"not a valid MPRNet checkpoint: {exc}") from exc
    return config


def _detect_reduction(squeezes: list[tuple[int, int]]) -> int:
    """The squeeze ratio r with c // r == squeezed width for every attention layer.

    Several ratios can fit (16 // 7 == 16 // 8); all build the same network. The
    largest is the one a config would name, since it divides some width exactly.
    """
    if not squeezes:
        raise CheckpointError("not an MPRNet checkpoint: no channel-attention layers")
    c0, m0 = squeezes[0]
    widest = LIMITS["n_feat"] + 2 * max(LIMITS["scale_unetfeats"], LIMITS["scale_orsnetfeats"])
    if any(c > widest for c, _ in squeezes):
        raise CheckpointError("not an MPRNet checkpoint: a channel-attention layer is too wide")
    if m0 < 1:
        raise CheckpointError("not an MPRNet checkpoint: empty channel-attention layer")
    fits = [r for r in range(1, c0 + 1) if all(c // r == m for c, m in squeezes)]
    if not fits:
        raise CheckpointError("not an MPRNet checkpoint: channel-attention widths disagree")
    return max(fits)
