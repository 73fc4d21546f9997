"""pad → tile → infer → stitch, with out-of-memory recovery.

Memory stays flat as images grow: the decoded float image and the blender's
two accumulators are the only image-sized buffers. Reflect padding to a
multiple of 8 is done per tile by index arithmetic, so no padded copy of the
image is ever made, and only one batch of tiles lives on the device.

Progress is reported through a callback (`done, total`), never printed here.
Inference goes through the `Backend` protocol only (numpy batches in and out), so
the same loop drives PyTorch and OpenVINO.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from mprnet_cli.backends.base import Backend, Batch
from mprnet_cli.choices import Precision
from mprnet_cli.errors import NonFiniteOutputError, OutOfMemoryError, UsageError
from mprnet_cli.inference.tiling import (
    ALIGN,
    DEFAULT_OVERLAP,
    Blender,
    Tile,
    plan_region,
    plan_tiles,
    round_up,
    shrink_tile,
    valid_tile,
)
from mprnet_cli.model.config import MPRNetConfig

Progress = Callable[[int, int], None]
Warn = Callable[[str], None]
# A float32 NCHW batch on the CPU -> restored batch of the same shape (an Engine, or a
# wrapper around one such as quality.self_ensemble).
BatchFn = Callable[[Batch], Batch]

MIN_TILE = 64
MAX_AUTO_TILE = 2048
DEFAULT_TILE = 512  # when a backend cannot price its memory


@dataclass(frozen=True)
class TileOptions:
    """How to cut the image. `tile=None` picks from free memory, `0` means one pass."""

    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    batch: int = 1
    min_tile: int = MIN_TILE

    def __post_init__(self) -> None:
        if self.tile is not None and not valid_tile(self.tile):
            raise UsageError(
                f"--tile must be 0, auto or a multiple of {ALIGN} (at least {ALIGN}), got {self.tile}"
            )
        if self.overlap < 0:
            raise UsageError("--tile-overlap must be >= 0")
        if self.batch < 1:
            raise UsageError("--tile-batch must be >= 1")


@dataclass
class RunStats:
    """What happened while restoring one image (for --json and benchmarks)."""

    tiles: int = 0
    tile_size: int = 0
    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"
    fell_back_to_cpu: bool = False
    oom_splits: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def auto_tile(backend: Backend, height: int, width: int) -> int:
    """0 (one pass) when the image fits in 70% of free memory (and its sides are at most
    the backend's `one_pass_side`), else the largest square tile that fits (at most its
    `max_tile`)."""
    caps = backend.capabilities
    cap = MAX_AUTO_TILE if caps.max_tile is None else min(MAX_AUTO_TILE, caps.max_tile)
    if caps.bytes_per_pixel is None:
        return min(DEFAULT_TILE, cap)
    budget = 0.7 * backend.free_memory()
    fits = height * width * caps.bytes_per_pixel <= budget
    if fits and (caps.one_pass_side is None or max(height, width) <= caps.one_pass_side):
        return 0
    side = int(math.sqrt(max(budget, 0.0) / caps.bytes_per_pixel))
    align = caps.align
    return max(MIN_TILE, min(cap, side - side % align))


# Live activations of one forward pass are ~38-40 bytes per input pixel per channel
# of the full-resolution stage (n_feat + scale_orsnetfeats) in float32 and ~23 under
# 16-bit autocast, for every width measured (3 published networks, 2 compact ones;
# H200 and CPU). The CPU allocator's peak RSS is 2.1-2.4x the live peak
# (benchmarks/measure_memory.py); CUDA's caching allocator adds ~10%.
_LIVE_BYTES = {Precision.FP32: 40.0, Precision.BF16: 24.0, Precision.FP16: 24.0}
_ALLOCATOR = {"cpu": 2.4, "cuda": 1.1, "mps": 1.3}


def estimate_bytes_per_pixel(config: MPRNetConfig, precision: Precision, device_type: str) -> float:
    """Peak memory per input pixel of one forward pass, for widths nobody measured."""
    per_channel = _LIVE_BYTES.get(precision, _LIVE_BYTES[Precision.FP32])
    return (
        per_channel * (config.n_feat + config.scale_orsnetfeats) * _ALLOCATOR.get(device_type, 2.4)
    )


def reflect_index(n: int, size: int) -> NDArray[np.intp]:
    """Indices 0..n-1 of an axis of length `size` reflect-padded at the far end (torch 'reflect')."""
    idx = np.arange(n)
    if size == 1:
        return np.zeros(n, dtype=np.intp)
    period = 2 * (size - 1)
    idx = idx % period
    return np.where(idx < size, idx, period - idx).astype(np.intp)


def _cut(
    rgb: NDArray[np.float32], tile: Tile, rows: NDArray[np.intp], cols: NDArray[np.intp]
) -> NDArray[np.float32]:
    h, w = rgb.shape[:2]
    if tile.y1 <= h and tile.x1 <= w:
        return rgb[tile.y0 : tile.y1, tile.x0 : tile.x1]
    return rgb[np.ix_(rows[tile.y0 : tile.y1], cols[tile.x0 : tile.x1])]


def _batches(queue: deque[Tile], size: int) -> Iterator[list[Tile]]:
    while queue:
        first = queue.popleft()
        batch = [first]
        while (
            queue
            and len(batch) < size
            and (queue[0].height, queue[0].width) == (first.height, first.width)
        ):
            batch.append(queue.popleft())
        yield batch


def restore_array(
    backend: Backend,
    rgb: NDArray[np.float32],
    options: TileOptions = TileOptions(),
    *,
    progress: Progress | None = None,
    warn: Warn | None = None,
    forward: BatchFn | None = None,
) -> tuple[NDArray[np.float32], RunStats]:
    """Restore an (H, W, 3) float32 image in [0, 1]; returns the clipped result and stats.

    `forward` runs the tiles instead of `backend` itself (which still sizes them and
    recovers from out-of-memory errors): a wrapper around the backend, such as a
    self-ensemble.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    start = time.perf_counter()
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    h, w = rgb.shape[:2]
    align = backend.capabilities.align
    ph, pw = round_up(h, align), round_up(w, align)
    rows, cols = reflect_index(ph, h), reflect_index(pw, w)

    tile = options.tile
    if tile is None:
        tile = auto_tile(backend, ph, pw)
    overlap = min(options.overlap, max(tile - align, 0)) if tile else 0
    plan = plan_tiles(ph, pw, tile, overlap)
    # The window ramps over the requested overlap even for a single tile, so that
    # sub-tiles made by out-of-memory recovery blend smoothly too.
    blender = Blender(ph, pw, 3, options.overlap)
    stats = RunStats(
        tile_size=tile or max(ph, pw),
        device=backend.device,
        backend=backend.name,
        precision=backend.precision.value,
    )

    queue: deque[Tile] = deque(plan.tiles)
    total, done = len(queue), 0
    current = tile or max(ph, pw)
    while queue:
        batch = next(_batches(queue, options.batch))
        x = np.stack([_cut(rgb, t, rows, cols) for t in batch]).transpose(0, 3, 1, 2)
        try:
            out = (forward or backend)(np.ascontiguousarray(x))
        except Exception as exc:
            if not backend.is_out_of_memory(exc):
                raise
            del exc
            backend.release_memory()
            current, total = _recover(
                backend,
                batch,
                queue,
                current,
                options.overlap,
                options.min_tile,
                total,
                stats,
                warn,
            )
            continue
        check_finite(out, backend.precision)
        for t, o in zip(batch, out.transpose(0, 2, 3, 1), strict=True):
            blender.add(t, o)
        done += len(batch)
        stats.tiles += len(batch)
        if progress is not None:
            progress(done, total)

    result = blender.result()[:h, :w]
    np.clip(result, 0.0, 1.0, out=result)
    stats.seconds = time.perf_counter() - start
    stats.tile_size = current
    return result, stats


def check_finite(out: Batch, precision: Precision) -> None:
    """NaN/Inf would quantise to black pixels and look like success: fail the image instead."""
    if bool(np.isfinite(out).all()):
        return
    hint = (
        "the weights may be damaged: try other weights"
        if precision is Precision.FP32
        else f"{precision.value} may have overflowed: try --precision fp32"
    )
    raise NonFiniteOutputError(f"the network produced NaN or infinite values; {hint}")


def _recover(
    backend: Backend,
    batch: list[Tile],
    queue: deque[Tile],
    current: int,
    overlap: int,
    min_tile: int,
    total: int,
    stats: RunStats,
    warn: Warn | None,
) -> tuple[int, int]:
    """Out of memory: re-plan the failed and pending tiles smaller, or fall back to the CPU.

    Finished tiles stay in the blender; only what is not done yet is cut again.
    """
    smaller = shrink_tile(current, overlap)
    if smaller is not None and smaller[0] >= min_tile:
        pending = [*batch, *queue]
        queue.clear()
        for t in pending:
            if max(t.height, t.width) > smaller[0]:
                queue.extend(plan_region(t, *smaller))
            else:
                queue.append(t)
        stats.oom_splits += 1
        stats.notes.append(f"out of memory at tile {current}, retrying at {smaller[0]}")
        return smaller[0], total - len(pending) + len(queue)
    if backend.capabilities.can_fall_back:
        if warn is not None:
            warn(
                f"{backend.device} ran out of memory even with {current}px tiles; continuing on the CPU"
            )
        backend.fall_back()
        stats.fell_back_to_cpu = True
        stats.device = backend.device
        stats.precision = backend.precision.value
        queue.extendleft(reversed(batch))
        return current, total
    raise OutOfMemoryError(
        f"not enough memory even with {current}px tiles on the CPU; close other programs or "
        "use a machine with more memory"
    )
