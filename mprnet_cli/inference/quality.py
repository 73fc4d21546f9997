"""Quality knobs around the network: self-ensemble (a batch wrapper) and strength (a post-step).

Both are kept out of the tile loop on purpose: the ensemble wraps any function
that maps a float32 NCHW batch to one of the same shape (the engine, or any
backend), and strength acts on the finished image, so neither cares how the
image was cut or which engine ran it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from mprnet_cli.backends.base import Batch
from mprnet_cli.choices import Ensemble
from mprnet_cli.inference.pipeline import BatchFn
from mprnet_cli.settings import check_ensemble as check_ensemble
from mprnet_cli.settings import check_strength as check_strength

Transform = Callable[[Batch], Batch]


def _dihedral(k: int, mirror: bool) -> tuple[Transform, Transform]:
    """(forward, inverse) of: mirror left-right if asked, then rotate by k quarter turns."""

    def forward(x: Batch) -> Batch:
        if mirror:
            x = np.flip(x, -1)
        # Backends take C-contiguous batches: flips and rotations are views until here.
        return np.ascontiguousarray(np.rot90(x, k, axes=(-2, -1)) if k else x)

    def inverse(y: Batch) -> Batch:
        if k:
            y = np.rot90(y, -k, axes=(-2, -1))
        return np.flip(y, -1) if mirror else y

    return forward, inverse


def ensemble_transforms(mode: Ensemble) -> list[tuple[Transform, Transform]]:
    """The (transform, inverse) pairs of `mode`, identity first."""
    if mode is Ensemble.OFF:
        return [_dihedral(0, False)]
    if mode is Ensemble.MIRROR:
        return [_dihedral(0, False), _dihedral(0, True)]
    return [_dihedral(k, mirror) for mirror in (False, True) for k in range(4)]


def self_ensemble(forward: BatchFn, mode: Ensemble) -> BatchFn:
    """`forward` averaged over flips/rotations of its input (`mode`: 1, 2 or 8 passes).

    The passes run one after another, so memory stays that of one pass (a quarter
    turn swaps a tile's height and width; tiles are multiples of 8 both ways, so the
    network accepts either). `Ensemble.OFF` returns `forward` itself.
    """
    if mode is Ensemble.OFF:
        return forward
    pairs = ensemble_transforms(mode)

    def averaged(batch: Batch) -> Batch:
        total: Batch | None = None
        for transform, inverse in pairs:
            out = inverse(forward(transform(batch)))
            total = out if total is None else total + out
        assert total is not None
        return (total / np.float32(len(pairs))).astype(np.float32, copy=False)

    return averaged


def apply_strength(
    restored: NDArray[np.float32], original: NDArray[np.float32], strength: float
) -> NDArray[np.float32]:
    """``strength * restored + (1 - strength) * original``; 1 returns `restored` untouched.

    For users who find a network over-smooths texture: part of the input's detail
    (and of its degradation) comes back in proportion.
    """
    if strength >= 1.0:
        return restored
    if restored.shape != original.shape:
        raise ValueError(f"shapes differ: restored {restored.shape}, original {original.shape}")
    s = np.float32(strength)
    return (s * restored + (np.float32(1.0) - s) * original).astype(np.float32, copy=False)
