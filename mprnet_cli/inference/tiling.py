"""Overlapping tiles and seamless blending, so any image size runs in bounded memory.

Pure numpy and model-agnostic on purpose: the geometry and the blending are the
parts that are easy to get subtly wrong, so they are tested here with identity
and simple per-tile functions, without torch or weights.

Coordinates are pixels of the *padded* image (the caller reflect-pads to a
multiple of `align` first), rectangles are half-open, arrays are HWC float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# The tile-size rule lives with the options it checks (settings is light; tiling imports it,
# never the other way round), and is re-exported here for the tile loop.
from mprnet_cli.settings import ALIGN as ALIGN
from mprnet_cli.settings import DEFAULT_OVERLAP as DEFAULT_OVERLAP
from mprnet_cli.settings import valid_tile as valid_tile

__all__ = [
    "Blender",
    "Tile",
    "TilePlan",
    "plan_region",
    "plan_tiles",
    "shrink_tile",
    "tile_window",
    "valid_tile",
]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Tile:
    """A half-open rectangle ``[y0, y1) x [x0, x1)`` of the padded image."""

    y0: int
    x0: int
    y1: int
    x1: int

    def __post_init__(self) -> None:
        # An empty or inverted tile is always a bug upstream; fail where it is made.
        if not (0 <= self.y0 < self.y1 and 0 <= self.x0 < self.x1):
            raise ValueError(f"invalid tile {self}: need 0 <= y0 < y1 and 0 <= x0 < x1")

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)``: ``img[tile.slices]`` for HWC, ``t[..., ys, xs]`` for NCHW."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering a ``height x width`` image, row-major.

    `tile` and `overlap` are the values that were asked for (``tile == 0``: one
    tile); the actual tile shapes are in `tiles` (a tile shrinks to the image
    along an axis where the image is smaller).
    """

    height: int
    width: int
    tile: int
    overlap: int
    tiles: tuple[Tile, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is at least `n`."""
    return -(-n // multiple) * multiple


def _check_params(tile: int, overlap: int, align: int) -> None:
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    if not valid_tile(tile, align):
        raise ValueError(f"tile must be 0 (whole image) or a multiple of {align}, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if tile != 0 and overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than tile ({tile})")


def _axis_starts(size: int, tile: int, overlap: int, align: int) -> tuple[int, list[int]]:
    """Tile length and starts along one axis: regular steps, last tile flush with the end.

    The length is balanced: the fewest tiles of at most `tile` pixels that
    cover `size` with the overlap, each shrunk to the smallest aligned length
    that still does. (Flush-only planning would run a 520-pixel axis as two
    512-pixel tiles, nearly twice the work.) Flushing the last tile instead of
    a short remainder keeps every tile the same aligned size, which the
    network's down-sampling needs and lets tiles be batched.
    """
    if tile == 0 or tile >= size:
        return size, [0]
    count = -(-(size - overlap) // (tile - overlap))
    length = -(-(size + (count - 1) * overlap) // count)
    length = min(tile, round_up(length, align))
    step = max(align, (length - overlap) // align * align)
    return length, [*range(0, size - length, step), size - length]


def plan_region(region: Tile, tile: int, overlap: int, align: int = ALIGN) -> tuple[Tile, ...]:
    """Tiles covering `region`, in absolute coordinates, row-major.

    Used to redo one failed tile with smaller tiles (out-of-memory recovery);
    see `shrink_tile` for choosing `tile` and `overlap`. Same rules as
    `plan_tiles`, with `region` in place of the image.
    """
    _check_params(tile, overlap, align)
    if any(v % align for v in (region.y0, region.x0, region.y1, region.x1)):
        raise ValueError(f"region {region} is not aligned to multiples of {align}")
    th, ys = _axis_starts(region.height, tile, overlap, align)
    tw, xs = _axis_starts(region.width, tile, overlap, align)
    return tuple(
        Tile(region.y0 + y, region.x0 + x, region.y0 + y + th, region.x0 + x + tw)
        for y in ys
        for x in xs
    )


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = ALIGN) -> TilePlan:
    """Plan equal-sized, `align`-aligned, overlapping tiles covering the image.

    Along each axis the tile length is at most `tile` (balanced: see
    `_axis_starts`), starts are ``0, step, 2*step, ...`` with ``step = length -
    overlap`` rounded down to a multiple of `align` (at least `align`), so
    neighbours overlap by at least ``min(overlap, length - align)`` (an overlap
    above that is accepted but cannot be honoured); the last tile ends at the
    border.
    """
    _check_params(tile, overlap, align)
    if height < 1 or width < 1 or height % align or width % align:
        raise ValueError(
            f"image size {height}x{width} must be positive multiples of {align}; pad it first"
        )
    tiles = plan_region(Tile(0, 0, height, width), tile, overlap, align)
    return TilePlan(height=height, width=width, tile=tile, overlap=overlap, tiles=tiles)


def shrink_tile(tile: int, overlap: int, align: int = ALIGN) -> tuple[int, int] | None:
    """Next smaller ``(tile, overlap)`` for out-of-memory recovery, or None at the bottom.

    Halving `tile` alone can break the plan rules (``24 // 2 = 12`` is not
    aligned, an overlap of 48 is not below 32), so the tile is rounded down to
    a multiple of `align` and the overlap capped at half the new tile (rounded
    down to `align`): the step stays at least half a tile, so the redo does not
    explode into many tiny tiles, and neighbours really overlap by the returned
    overlap. `tile` is the size of the tile that failed (for a non-square tile,
    its larger side).
    """
    new_tile = tile // 2 // align * align
    if new_tile < align:
        return None
    return new_tile, min(max(overlap, 0), new_tile // 2 // align * align)


def _ramp(length: int, overlap: int, start: bool, end: bool) -> npt.NDArray[np.float64]:
    """1-D window: raised cosine over `overlap` pixels at each non-border end, else 1.

    Sampled at pixel centres so it is never 0 (every covered pixel normalises);
    where the two ramps meet (short tiles) the smaller one wins.
    """
    w = np.ones(length, dtype=np.float64)
    if overlap == 0:
        return w
    i = np.arange(length, dtype=np.float64)
    # sin^2 == raised cosine, without cancellation for wide ramps.
    up = np.sin(0.5 * np.pi * np.minimum((i + 0.5) / overlap, 1.0)) ** 2
    if start:
        w = np.minimum(w, up)
    if end:
        w = np.minimum(w, up[::-1])
    return w


def tile_window(
    height: int,
    width: int,
    overlap: int,
    *,
    top: bool = False,
    bottom: bool = False,
    left: bool = False,
    right: bool = False,
) -> FloatArray:
    """Blending weights for one tile; the flags say which sides lie on the image border.

    Border sides keep full weight to the edge: nothing overlaps them, so a ramp
    there would only down-weight real pixels for nothing.
    """
    wy = _ramp(height, overlap, start=not top, end=not bottom)
    wx = _ramp(width, overlap, start=not left, end=not right)
    return np.outer(wy, wx).astype(np.float32)


class Blender:
    """Accumulates tile outputs into a seamless image as a running weighted mean.

    ``acc_w += w; out += (x - out) * (w / acc_w)`` instead of
    ``sum(w * x) / sum(w)``: identical inputs give bit-identical outputs (an
    identity model round-trips exactly) and memory stays at two image-sized
    buffers, `out` (H, W, C) and `acc_w` (H, W), both float32.
    """

    def __init__(self, height: int, width: int, channels: int, overlap: int) -> None:
        if height < 1 or width < 1 or channels < 1:
            raise ValueError(f"bad image shape {height}x{width}x{channels}")
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        self.height = height
        self.width = width
        self.channels = channels
        self.overlap = overlap
        self._out: FloatArray = np.zeros((height, width, channels), dtype=np.float32)
        self._acc: FloatArray = np.zeros((height, width), dtype=np.float32)
        self._n_covered = 0
        self._windows: dict[tuple[int, int, bool, bool, bool, bool], FloatArray] = {}

    def window(self, tile: Tile) -> FloatArray:
        """The (cached) weights this blender uses for `tile`."""
        key = (
            tile.height,
            tile.width,
            tile.y0 == 0,
            tile.y1 == self.height,
            tile.x0 == 0,
            tile.x1 == self.width,
        )
        w = self._windows.get(key)
        if w is None:
            h, wd, top, bottom, left, right = key
            w = tile_window(h, wd, self.overlap, top=top, bottom=bottom, left=left, right=right)
            w.flags.writeable = False
            self._windows[key] = w
        return w

    def add(self, tile: Tile, data: npt.ArrayLike) -> None:
        """Blend one tile's output, ``(tile.height, tile.width, channels)`` HWC float32."""
        if tile.y1 > self.height or tile.x1 > self.width:
            raise ValueError(f"{tile} lies outside the {self.height}x{self.width} image")
        x = np.asarray(data, dtype=np.float32)
        expected = (tile.height, tile.width, self.channels)
        if x.shape != expected:
            raise ValueError(f"tile data has shape {x.shape}, expected {expected} (HWC)")
        w = self.window(tile)
        acc = self._acc[tile.slices]  # views: updated in place
        out = self._out[tile.slices]
        first = acc == 0
        self._n_covered += int(np.count_nonzero(first))
        acc += w
        with np.errstate(invalid="ignore"):  # inf - inf: NaN, masked out below
            delta = (x - out) * (w / acc)[..., None]
        # First cover: copy (keeps -0.0, which 0.0 + -0.0 would lose). Later: skip
        # equal values, so repeated identical data stays bit-identical, signed zeros too.
        np.copyto(out, x, where=first[..., None])
        np.add(out, delta, out=out, where=(x != out))

    @property
    def covered(self) -> bool:
        """True once every pixel has received weight."""
        return self._n_covered == self.height * self.width

    def result(self) -> FloatArray:
        """The blended (H, W, C) float32 image: the internal buffer, not a copy.

        Raises RuntimeError if a pixel was never covered (a planning bug).
        """
        if not self.covered:
            missing = self.height * self.width - self._n_covered
            y, x = np.unravel_index(int(np.argmin(self._acc)), self._acc.shape)
            raise RuntimeError(f"{missing} pixel(s) never covered by a tile, e.g. (y={y}, x={x})")
        return self._out
