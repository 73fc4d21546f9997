"""Split lines: why MPRNet draws them, and the thorough way to hide them.

MPRNet cuts every input it sees into quarters (stage 1) and halves (stage 2), and
each piece is restored as if it were a whole image (zero padding at the cut,
channel attention averaged over the piece alone); weights that do not hide those
cuts leave a faint line along the centre row and column of the image, or of every
tile when tiled. Three remedies, `--split-lines keep|fix|hide`:

- `fix` (the default) runs the same weights on the input uncut
  (`MPRNet.cut_input = False`, set by `api.Restorer`): stages 1 and 2 see the whole
  tile, so no line is drawn, at no extra cost (the same operations on the same
  pixels). Its output differs from the cut network's everywhere by the attention
  averages, not only at the lines; PSNR moved by at most a few hundredths of a dB
  (docs/quality-and-split-lines.md). Nothing to do here: the tile loop is
  `pipeline.restore_array`.
- `keep` runs the network as published and trained, lines included.
- `hide` (`restore_hiding_split_lines`, below) blends three shifted full passes of
  the cut network away from their own lines: the published network's output,
  without its lines, at three times the cost.

How `hide` works: the image is restored `PASSES` times, each time on a canvas reflect-padded by a
different amount on the top/left (the same total on every pass, so every pass
gets the same tile plan and the lines move by exactly the shift). Each pass is
weighted by a window that falls to ~0 within `BAND` pixels of its own lines, the
tile centre rows and columns (tile edges are already faded out inside each pass by
the tile blender). A pixel lies near at most one pass's row line and one pass's
column line (the shift is at least twice the band, and lines within a pass are a
tile step apart, which must be at least three shifts, 72 px: true for one pass and
for tiles of 256 px or more with the default overlap, and for most images in 112 px
tiles), so with three passes some pass always has full weight there, including
where one pass's vertical line crosses another's horizontal one. With smaller
tiles the bands of different passes overlap and lines are only partly hidden.

The geometry is numpy only; the passes run the network through `pipeline.restore_array`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from mprnet_cli.backends.base import Backend
from mprnet_cli.inference.pipeline import (
    BatchFn,
    Progress,
    RunStats,
    TileOptions,
    Warn,
    auto_tile,
    restore_array,
)
from mprnet_cli.inference.tiling import ALIGN, TilePlan, plan_tiles, round_up

BAND = 12
"""Pixels each side of a line over which a pass's weight rises from ~0 to 1. The
lines measured on the bundled weights differ from their neighbours over 4-5 rows
each side (issue 13), so 12 leaves the disturbed rows well inside the low-weight band."""
SHIFT = 2 * BAND
"""Offset between consecutive passes: lines of two passes never share a band."""
PASSES = 3
"""Two passes cannot work: where pass A's row line meets pass B's column line both are bad."""
PAD = SHIFT * (PASSES - 1)
"""Extra rows and columns every pass restores (reflected image content)."""


def split_lines(plan: TilePlan) -> tuple[list[int], list[int]]:
    """(rows, columns) of a plan where one pass has a split line, as boundaries.

    A boundary `r` lies between pixel rows r-1 and r: each tile's centre (MPRNet splits
    its input at ``h // 2`` and ``w // 2``). Tile edges are not listed: inside each pass
    the tile blender already fades every tile to ~0 at its own edges.
    """
    rows = {t.y0 + t.height // 2 for t in plan.tiles}
    cols = {t.x0 + t.width // 2 for t in plan.tiles}
    return sorted(rows), sorted(cols)


def line_weight(
    length: int, offset: int, lines: Iterable[int], band: int = BAND
) -> NDArray[np.float32]:
    """Weight of pixels 0..length-1 of the image for a pass whose canvas starts `offset`
    pixels before the image: sin² in the distance to the nearest line, 1 from `band` on.

    Sampled at pixel centres, so it is small but never 0 (every pixel normalises).
    """
    centres = np.arange(length, dtype=np.float64) + offset + 0.5
    w = np.ones(length, dtype=np.float64)
    for r in lines:
        d = np.abs(centres - r)
        np.minimum(w, np.sin(0.5 * np.pi * np.minimum(d / band, 1.0)) ** 2, out=w)
    return w.astype(np.float32)


def pass_offsets() -> list[int]:
    """Top/left padding of each pass (the bottom/right get `PAD` minus it)."""
    return [k * SHIFT for k in range(PASSES)]


def pass_weights(height: int, width: int, plan: TilePlan) -> list[NDArray[np.float32]]:
    """The (height, width) weight of each pass on an image restored through `plan`
    (the plan of the padded canvas, shared by all passes)."""
    rows, cols = split_lines(plan)
    return [
        np.outer(line_weight(height, o, rows), line_weight(width, o, cols)) for o in pass_offsets()
    ]


def canvas_plan(height: int, width: int, tile: int, overlap: int) -> TilePlan:
    """The tile plan every pass runs (`restore_array` pads the canvas to a multiple of 8)."""
    ph, pw = round_up(height + PAD, ALIGN), round_up(width + PAD, ALIGN)
    return plan_tiles(ph, pw, tile, min(overlap, max(tile - ALIGN, 0)) if tile else 0)


def restore_hiding_split_lines(
    backend: Backend,
    rgb: NDArray[np.float32],
    options: TileOptions,
    *,
    forward: BatchFn | None = None,
    progress: Progress | None = None,
    warn: Warn | None = None,
) -> tuple[NDArray[np.float32], RunStats]:
    """`restore_array` three times on shifted canvases, blended away from each pass's lines.

    Costs three passes over a canvas `PAD` pixels larger each way. Tiles split again
    after an out-of-memory error add lines these weights do not know about.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    fixed = _sized(backend, options, round_up(h + PAD, ALIGN), round_up(w + PAD, ALIGN))
    tile = fixed.tile or 0
    weights = pass_weights(h, w, canvas_plan(h, w, tile, options.overlap))
    out = np.zeros((h, w, 3), dtype=np.float32)
    acc = np.zeros((h, w), dtype=np.float32)
    total = RunStats(
        tile_size=tile,
        device=backend.device,
        backend=backend.name,
        precision=backend.precision.value,
    )
    per_pass: list[int] = []
    for k, (offset, weight) in enumerate(zip(pass_offsets(), weights, strict=True)):
        pad = ((offset, PAD - offset), (offset, PAD - offset), (0, 0))
        canvas = np.pad(rgb, pad, mode="reflect")
        on_tiles = None
        if progress is not None:
            on_tiles = _pass_progress(progress, k)
        result, stats = restore_array(
            backend, canvas, fixed, forward=forward, progress=on_tiles, warn=warn
        )
        _merge(total, stats)
        per_pass.append(stats.tiles)
        # Running weighted mean, as tiling.Blender: identical passes stay bit-identical.
        acc += weight
        x = result[offset : offset + h, offset : offset + w]
        out += (x - out) * (weight / acc)[..., None]
    np.clip(out, 0.0, 1.0, out=out)
    # The image's tiles, not passes x tiles; and the passes were asked for: no note (notes
    # become the record's warnings).
    total.tiles = max(per_pass)
    return out, total


def _sized(backend: Backend, options: TileOptions, height: int, width: int) -> TileOptions:
    """`options` with the tile size fixed (auto: from free memory for a `height` x `width`
    canvas), so that the geometry computed here is the plan `restore_array` will run."""
    if options.tile is not None:
        return options
    tile = auto_tile(backend, height, width)
    return TileOptions(
        tile=tile, overlap=options.overlap, batch=options.batch, min_tile=options.min_tile
    )


def _pass_progress(progress: Progress, k: int) -> Progress:
    def report(done: int, total: int) -> None:
        progress(k * total + done, PASSES * total)

    return report


def _merge(total: RunStats, stats: RunStats) -> None:
    total.tiles += stats.tiles
    total.tile_size = stats.tile_size
    total.device = stats.device
    total.fell_back_to_cpu |= stats.fell_back_to_cpu
    total.oom_splits += stats.oom_splits
    total.seconds += stats.seconds
    total.notes.extend(stats.notes)
