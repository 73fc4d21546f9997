"""Fix or hide MPRNet's split lines at inference.

Two remedies. `restore_fixing_split_lines` (`--split-lines fix`) re-runs
the network only on narrow windows straddling each line, whose own split lies away
from the line, and feathers their pixels in over the line's band (see its docstring).
`restore_hiding_split_lines` (`--split-lines hide`) blends shifted full passes away
from their own lines:

MPRNet cuts every input it sees in two (rows, stages 1 and 2) and four (rows and
columns, stage 1); weights that do not hide those cuts leave a faint line along
the centre row and column of the image, or of every tile when tiled. Here the
image is restored `PASSES` times, each time on a canvas reflect-padded by a
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

The geometry is numpy only; both remedies run the network through
`pipeline.restore_array`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    reflect_index,
    restore_array,
)
from mprnet_cli.inference.tiling import ALIGN, Blender, Tile, TilePlan, plan_tiles, round_up

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


# --------------------------------------------------------------------------- fix

FIX_CORE = 4
"""Pixels each side of a line where the re-run window replaces the output outright: the
bundled weights' lines differ from line-free output by 0.2-0.8 levels within 4 rows of
the boundary, and by 0.05-0.15 beyond 6 (measured against `--split-lines hide`)."""
FIX_FEATHER = 6
"""Pixels over which the window's share then falls to 0 (cos²): band half-width 10."""
FIX_LEAD = 16
"""Rows (columns) from a line to its window's near edge and to the window's own split.
The network's output differs from a larger run's within ~8 px of a window edge (2 levels
on the edge row, 0.1 at 8 px), and the window's own line disturbs ~6 px: both stay
outside the band (16 - 10 = 6 to the edge, 16 - 10 = 6 to the split's core)."""
FIX_WINDOW = 4 * FIX_LEAD
"""Window thickness across a line: the line sits `FIX_LEAD` in, the split 2·`FIX_LEAD` in."""


def fix_weight(length: int, lines: Iterable[int]) -> NDArray[np.float32]:
    """Share of the re-run windows at pixels 0..length-1: 1 within `FIX_CORE` of a line
    (boundary), cos² down to 0 at `FIX_CORE + FIX_FEATHER`, 0 beyond."""
    centres = np.arange(length, dtype=np.float64) + 0.5
    w = np.zeros(length, dtype=np.float64)
    for r in lines:
        d = np.clip((np.abs(centres - r) - FIX_CORE) / FIX_FEATHER, 0.0, 1.0)
        # Exactly 0 past the band (cos(pi/2)**2 is 4e-33): those pixels stay the pass's.
        np.maximum(w, np.where(d < 1.0, np.cos(0.5 * np.pi * d) ** 2, 0.0), out=w)
    return w.astype(np.float32)


def fix_window(line: int, size: int) -> int | None:
    """Start of the `FIX_WINDOW`-thick window for a line at boundary `line` on an axis of
    `size` (padded) pixels: the line `FIX_LEAD` in and the split after it, or mirrored
    near the far end. None when no window both fits and keeps its split ≥ `FIX_LEAD`
    from the line (axes under `FIX_WINDOW` px: nothing to re-run)."""
    half = FIX_WINDOW // 2
    for start in (line - FIX_LEAD, line + FIX_LEAD - FIX_WINDOW):
        start = min(max(start, 0), size - FIX_WINDOW)
        if start >= 0 and abs(start + half - line) >= FIX_LEAD:
            return start
    return None


@dataclass(frozen=True)
class FixPlan:
    """The re-run windows of one tile plan, in padded-canvas coordinates.

    `rows` has, per distinct tile row, its line (boundary) and window start; `cols`
    likewise per tile column. Row windows run across each tile of that tile row (so
    their own column split is that tile's, fixed by the crossing windows), column
    windows down each tile of that tile column, and one square crossing window sits
    at each tile's centre.
    """

    plan: TilePlan
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]

    @property
    def windows(self) -> int:
        n_rows = len({(t.y0, t.y1) for t in self.plan})
        n_cols = len({(t.x0, t.x1) for t in self.plan})
        return len(self.rows) * n_cols + len(self.cols) * n_rows + len(self.rows) * len(self.cols)


def fix_plan(plan: TilePlan) -> FixPlan:
    """Lines of `plan` and where each one's window goes."""
    rows, cols = split_lines(plan)
    row_w = [(r, fix_window(r, plan.height)) for r in rows]
    col_w = [(c, fix_window(c, plan.width)) for c in cols]
    return FixPlan(
        plan,
        tuple((r, s) for r, s in row_w if s is not None),
        tuple((c, s) for c, s in col_w if s is not None),
    )


def restore_fixing_split_lines(
    backend: Backend,
    rgb: NDArray[np.float32],
    options: TileOptions,
    *,
    forward: BatchFn | None = None,
    progress: Progress | None = None,
    warn: Warn | None = None,
) -> tuple[NDArray[np.float32], RunStats]:
    """`restore_array`, then the network again on thin windows across each split line.

    For a line at row r of a tile, a window `FIX_WINDOW` rows tall (the line `FIX_LEAD`
    rows in, so the window's own split is `FIX_LEAD` rows past it) and as wide as the
    tile is restored; its rows within `FIX_CORE` of r replace the first pass, feathered
    over `FIX_FEATHER` more. The windows of one tile row are blended side by side like
    the tiles themselves. Columns likewise; where a row band crosses a column band both
    windows carry the other's line, so a square window offset from both lines fills the
    crossing. Cost: about ``FIX_WINDOW * (1/tile_height + 1/tile_width)`` of the first
    pass (13% for 1024-px tiles), not three passes. Tiles split again after an
    out-of-memory error add lines the windows do not know about.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    h, w = rgb.shape[:2]
    align = backend.capabilities.align
    ph, pw = round_up(h, align), round_up(w, align)
    fixed = _sized(backend, options, ph, pw)
    tile = fixed.tile or 0
    overlap = min(options.overlap, max(tile - align, 0)) if tile else 0
    fp = fix_plan(plan_tiles(ph, pw, tile, overlap))
    base_tiles = len(fp.plan)
    total_steps = base_tiles + fp.windows
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total_steps)

    def first(d: int, _total: int) -> None:
        if progress is not None:
            progress(d, total_steps)

    out, stats = restore_array(backend, rgb, fixed, forward=forward, progress=first, warn=warn)
    done = base_tiles
    if not fp.rows and not fp.cols:
        return out, stats
    rows_idx, cols_idx = reflect_index(ph, h), reflect_index(pw, w)
    start = stats.seconds

    def run(y0: int, y1: int, x0: int, x1: int) -> NDArray[np.float32]:
        window = rgb[np.ix_(rows_idx[y0:y1], cols_idx[x0:x1])]
        res, st = restore_array(
            backend, window, TileOptions(tile=0), forward=forward, progress=None, warn=warn
        )
        stats.seconds += st.seconds
        stats.fell_back_to_cpu |= st.fell_back_to_cpu
        stats.oom_splits += st.oom_splits
        step(1)
        return res

    row_spans = sorted({(t.y0, t.y1) for t in fp.plan})
    col_spans = sorted({(t.x0, t.x1) for t in fp.plan})
    n = FIX_WINDOW
    # Row windows: one strip per line, across the tiles of its tile row, blended like them.
    strips: dict[int, NDArray[np.float32]] = {}
    for r, s in fp.rows:
        blender = Blender(n, pw, 3, overlap)
        for x0, x1 in col_spans:
            blender.add(Tile(0, x0, n, x1), run(s, s + n, x0, x1))
        strips[r] = blender.result()
    columns: dict[int, NDArray[np.float32]] = {}
    for c, s in fp.cols:
        blender = Blender(ph, n, 3, overlap)
        for y0, y1 in row_spans:
            blender.add(Tile(y0, 0, y1, n), run(y0, y1, s, s + n))
        columns[c] = blender.result()
    crossings = {(r, c): run(sr, sr + n, sc, sc + n) for r, sr in fp.rows for c, sc in fp.cols}

    starts_r, starts_c = dict(fp.rows), dict(fp.cols)
    row_share = [(r, fix_weight(ph, [r])) for r in starts_r]
    col_share = [(c, fix_weight(pw, [c])) for c in starts_c]
    # Each band touches only the window rows/columns `FIX_LEAD` around its line.
    for r, wr in row_share:
        y0, y1 = max(r - FIX_LEAD, 0), min(r + FIX_LEAD, h)
        if y0 >= y1:
            continue
        sr = starts_r[r]
        a = wr[y0:y1, None, None]
        band = out[y0:y1]
        band += (strips[r][y0 - sr : y1 - sr, :w] - band) * a
    for c, wc in col_share:
        x0, x1 = max(c - FIX_LEAD, 0), min(c + FIX_LEAD, w)
        if x0 >= x1:
            continue
        sc = starts_c[c]
        b = wc[None, x0:x1, None]
        band = out[:, x0:x1]
        # Where a row band crosses, the column window's own row line is inside: there it
        # gives way to the crossing window in proportion to the row band's share.
        target = columns[c][:h, x0 - sc : x1 - sc].copy()
        for r, wr in row_share:
            y0, y1 = max(r - FIX_LEAD, 0), min(r + FIX_LEAD, h)
            if y0 >= y1:
                continue
            sr = starts_r[r]
            a = wr[y0:y1, None, None]
            cross = crossings[(r, c)][y0 - sr : y1 - sr, x0 - sc : x1 - sc]
            target[y0:y1] += (cross - target[y0:y1]) * a
        band += (target - band) * b
    np.clip(out, 0.0, 1.0, out=out)
    stats.tiles += fp.windows
    stats.notes.append(
        f"split lines fixed: {fp.windows} windows of {FIX_WINDOW} px "
        f"({stats.seconds - start:.1f} s of {stats.seconds:.1f} s)"
    )
    return out, stats
