"""Tiling geometry and blending, checked with identity and per-tile-constant "models".

The pipeline trusts these invariants blindly (no seams, no lost pixels, an
identity model round-trips bit-exactly), so they are property-tested here.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import tracemalloc
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mprnet_cli.inference.tiling import (
    Blender,
    Tile,
    TilePlan,
    plan_region,
    plan_tiles,
    shrink_tile,
    tile_window,
)

ALIGN = 8
FAST = settings(max_examples=60, deadline=None)

sizes = st.integers(1, 75).map(lambda k: ALIGN * k)  # 8 .. 600
tile_sizes = st.one_of(st.just(0), st.integers(1, 32).map(lambda k: ALIGN * k))  # 0, 8 .. 256


@st.composite
def plan_args(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """Any valid (height, width, tile, overlap); overlaps need not be aligned."""
    tile = draw(tile_sizes)
    overlap = draw(st.integers(0, tile - 1)) if tile else draw(st.integers(0, 64))
    return draw(sizes), draw(sizes), tile, overlap


def _step(tile: int, overlap: int) -> int:
    return max(ALIGN, (tile - overlap) // ALIGN * ALIGN)


@st.composite
def cheap_plan_args(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """Like `plan_args`, but at most 8 tiles per axis and tiles <= 128, so blending is fast."""
    tile = draw(st.one_of(st.just(0), st.integers(1, 16).map(lambda k: ALIGN * k)))
    overlap = draw(st.integers(0, tile - 1)) if tile else draw(st.integers(0, 64))
    max_size = 256 if tile == 0 else min(600, 7 * _step(tile, overlap) + tile)
    side = st.integers(1, max_size // ALIGN).map(lambda k: ALIGN * k)
    return draw(side), draw(side), tile, overlap


def _image(seed: int, height: int, width: int, channels: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((height, width, channels)).astype(np.float32)


def _blend_identity(
    image: npt.NDArray[np.float32], tiles: Iterable[Tile], overlap: int
) -> npt.NDArray[np.float32]:
    height, width, channels = image.shape
    blender = Blender(height, width, channels, overlap)
    for tile in tiles:
        blender.add(tile, image[tile.slices])
    assert blender.covered
    return blender.result()


def _bits(a: npt.NDArray[np.float32]) -> npt.NDArray[np.uint32]:
    return a.view(np.uint32)


def _assert_axis_covered(intervals: set[tuple[int, int]], size: int, overlap: int) -> None:
    """Intervals along one axis tile [0, size) with neighbours overlapping >= overlap."""
    ordered = sorted(intervals)
    assert ordered[0][0] == 0
    assert ordered[-1][1] == size
    for (a0, a1), (b0, _) in itertools.pairwise(ordered):
        assert a0 < b0 <= a1, "gap or duplicate start"
        assert a1 - b0 >= overlap, "neighbours overlap less than asked"


def _check_cover(tiles: tuple[Tile, ...], region: Tile, tile: int, overlap: int) -> None:
    """All of the planning invariants, for a plan over `region` (the image or a part)."""
    assert tiles, "empty plan"
    assert len(set(tiles)) == len(tiles), "duplicate tiles"
    assert list(tiles) == sorted(tiles, key=lambda t: (t.y0, t.x0)), "not row-major"
    th, tw = tiles[0].height, tiles[0].width
    if tile == 0:
        assert (th, tw) == (region.height, region.width)
    for length, size in ((th, region.height), (tw, region.width)):
        assert length % ALIGN == 0 and length <= size
        if tile:
            assert length <= tile, "tile larger than asked"
            # Balanced: no more tiles along an axis than tiles of the full size would need.
            if length < size:
                assert (
                    -(-(size - overlap) // max(length - overlap, 1))
                    <= -(-(size - overlap) // (tile - overlap)) + 1
                )
    for t in tiles:
        assert region.y0 <= t.y0 and t.y1 <= region.y1
        assert region.x0 <= t.x0 and t.x1 <= region.x1
        assert (t.height, t.width) == (th, tw), "tiles differ in size"
        assert t.y0 % ALIGN == 0 and t.x0 % ALIGN == 0, "tile not aligned"
    ys = {(t.y0 - region.y0, t.y1 - region.y0) for t in tiles}
    xs = {(t.x0 - region.x0, t.x1 - region.x0) for t in tiles}
    # The plan is the full grid ys x xs, so covering each axis covers the rectangle.
    assert len(tiles) == len(ys) * len(xs)
    # Neighbours overlap by >= overlap, except that the step never drops below `align`.
    _assert_axis_covered(ys, region.height, min(overlap, th - ALIGN) if len(ys) > 1 else 0)
    _assert_axis_covered(xs, region.width, min(overlap, tw - ALIGN) if len(xs) > 1 else 0)
    if len(tiles) <= 200:  # direct check too, where it is cheap
        hit = np.zeros((region.height, region.width), dtype=bool)
        for t in tiles:
            hit[t.y0 - region.y0 : t.y1 - region.y0, t.x0 - region.x0 : t.x1 - region.x0] = True
        assert hit.all()


# --- planning -------------------------------------------------------------------------


@FAST
@given(plan_args())
def test_plan_covers_image_with_full_aligned_tiles(args: tuple[int, int, int, int]) -> None:
    height, width, tile, overlap = args
    plan = plan_tiles(height, width, tile, overlap)
    assert isinstance(plan, TilePlan)
    assert (plan.height, plan.width, plan.tile, plan.overlap) == args
    assert len(plan) == len(plan.tiles) == len(list(plan))
    _check_cover(plan.tiles, Tile(0, 0, height, width), tile, overlap)


@FAST
@given(plan_args())
def test_plan_starts_follow_documented_step(args: tuple[int, int, int, int]) -> None:
    height, width, tile, overlap = args
    plan = plan_tiles(height, width, tile, overlap)
    for size, starts, length in (
        (height, sorted({t.y0 for t in plan}), plan.tiles[0].height),
        (width, sorted({t.x0 for t in plan}), plan.tiles[0].width),
    ):
        step = _step(length, overlap)
        expected = [*range(0, size - length, step), size - length]
        assert starts == expected


def test_plan_examples() -> None:
    assert plan_tiles(64, 64, 0, 0).tiles == (Tile(0, 0, 64, 64),)
    assert plan_tiles(64, 64, 64, 16).tiles == (Tile(0, 0, 64, 64),)
    # Image narrower than the tile: the tile shrinks along that axis only.
    # 48 px with tiles <= 32 and overlap 8 needs 2 tiles; balanced: ceil((48 + 8) / 2) = 28 -> 32.
    assert plan_tiles(16, 48, 32, 8).tiles == (Tile(0, 0, 16, 32), Tile(0, 16, 16, 48))
    # 72 px, tiles <= 32, overlap 12: 3 tiles; ceil((72 + 24) / 3) = 32; step 20 -> 16, last flush.
    assert [t.x0 for t in plan_tiles(8, 72, 32, 12)] == [0, 16, 32, 40]
    # 520 px with 512-px tiles: two balanced 280-px tiles, not two 512-px ones (3.9x the work).
    assert [(t.x0, t.width) for t in plan_tiles(8, 520, 512, 32)] == [(0, 280), (240, 280)]
    # overlap 7 with tile 8: step rounds down to 0, is raised to `align`.
    assert [t.x0 for t in plan_tiles(8, 24, 8, 7)] == [0, 8, 16]


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [
        (60, 64, 32, 8),  # height not aligned
        (64, 0, 32, 8),  # empty
        (64, 64, 4, 0),  # tile < align
        (64, 64, 20, 0),  # tile not a multiple of align
        (64, 64, -8, 0),
        (64, 64, 32, -1),
        (64, 64, 32, 32),  # overlap == tile
        (64, 64, 32, 40),
    ],
)
def test_plan_rejects_bad_arguments(height: int, width: int, tile: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        plan_tiles(height, width, tile, overlap)


def test_bad_regions_and_tiles_are_rejected() -> None:
    with pytest.raises(ValueError):
        plan_region(Tile(4, 0, 36, 32), 16, 0)  # unaligned region
    with pytest.raises(ValueError):
        plan_region(Tile(0, 0, 32, 32), 12, 0)
    with pytest.raises(ValueError):
        plan_region(Tile(0, 0, 32, 32), 16, 16)
    for bad in [(0, 0, 0, 8), (0, 8, 8, 0), (-8, 0, 8, 8)]:
        with pytest.raises(ValueError):
            Tile(*bad)


def test_tile_properties() -> None:
    t = Tile(8, 16, 40, 32)
    assert (t.height, t.width) == (32, 16)
    assert t.slices == (slice(8, 40), slice(16, 32))
    assert np.zeros((64, 64, 3))[t.slices].shape == (32, 16, 3)


@st.composite
def region_args(draw: st.DrawFn) -> tuple[Tile, int, int]:
    """An aligned region inside some image, and sub-tile parameters."""
    y0, x0 = draw(sizes) - ALIGN, draw(sizes) - ALIGN
    region = Tile(y0, x0, y0 + draw(sizes), x0 + draw(sizes))
    tile = draw(tile_sizes)
    overlap = draw(st.integers(0, tile - 1)) if tile else 0
    return region, tile, overlap


@FAST
@given(region_args())
def test_plan_region_covers_region(args: tuple[Tile, int, int]) -> None:
    region, tile, overlap = args
    _check_cover(plan_region(region, tile, overlap), region, tile, overlap)


@FAST
@given(plan_args())
def test_plan_region_of_whole_image_is_the_plan(args: tuple[int, int, int, int]) -> None:
    height, width, tile, overlap = args
    assert plan_region(Tile(0, 0, height, width), tile, overlap) == plan_tiles(*args).tiles


def test_shrink_tile_examples() -> None:
    assert shrink_tile(256, 32) == (128, 32)
    assert shrink_tile(64, 48) == (32, 16)  # overlap capped at half the new tile
    assert shrink_tile(64, 12) == (32, 12)
    assert shrink_tile(48, 20) == (24, 8)  # ... rounded down to the alignment
    assert shrink_tile(24, 16) == (8, 0)  # 12 rounded down to the alignment
    assert shrink_tile(8, 0) is None
    assert shrink_tile(15, 0) is None


@FAST
@given(st.integers(1, 4096).map(lambda k: ALIGN * k), st.integers(0, 4096))
def test_shrink_tile_gives_valid_plans_and_terminates(tile: int, overlap: int) -> None:
    overlap = min(overlap, tile - ALIGN)
    steps = 0
    while (nxt := shrink_tile(tile, overlap)) is not None:
        assert nxt[0] < tile
        tile, overlap = nxt
        assert overlap <= tile - ALIGN  # so neighbours really overlap by `overlap`
        plan_region(Tile(0, 0, 4 * tile, 4 * tile), tile, overlap)  # must not raise
        steps += 1
    assert tile >= ALIGN
    assert steps <= 12


# --- window ---------------------------------------------------------------------------


@FAST
@given(
    st.integers(1, 96),
    st.integers(1, 96),
    st.integers(0, 128),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_window_positive_and_full_on_border_sides(
    height: int, width: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool
) -> None:
    w = tile_window(height, width, overlap, top=top, bottom=bottom, left=left, right=right)
    assert w.shape == (height, width)
    assert w.dtype == np.float32
    assert (w > 0).all()
    assert (w <= 1).all()
    # Full weight right to the edge on border sides: the edge row/column is the maximum.
    if top:
        assert np.array_equal(w[0], w.max(axis=0))
    if bottom:
        assert np.array_equal(w[-1], w.max(axis=0))
    if left:
        assert np.array_equal(w[:, 0], w.max(axis=1))
    if right:
        assert np.array_equal(w[:, -1], w.max(axis=1))
    if (top and bottom and left and right) or overlap == 0:
        assert (w == 1).all()
    # A non-border side is ramped down (only the overlap zone; beyond it, weight 1).
    if overlap and not left and width >= 3:
        assert w[:, 0].max() < w.max()
    if overlap and not (left or right) and width >= 2 * overlap + 1:
        assert (w[:, overlap : width - overlap] == w.max(axis=1, keepdims=True)).all()


@pytest.mark.parametrize("overlap", [1, 8, 13, 32])
def test_window_ramps_are_a_partition_of_unity(overlap: int) -> None:
    """Two tiles overlapping by exactly `overlap`: their weights sum to 1 there (no seam)."""
    a = tile_window(1, 3 * overlap, overlap, top=True, bottom=True, left=True)[0]
    b = tile_window(1, 3 * overlap, overlap, top=True, bottom=True, right=True)[0]
    np.testing.assert_allclose(a[-overlap:] + b[:overlap], 1.0, rtol=0, atol=1e-6)


# --- blending -------------------------------------------------------------------------


@FAST
@given(cheap_plan_args(), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_identity_is_bit_exact(args: tuple[int, int, int, int], channels: int, seed: int) -> None:
    height, width, _, overlap = args
    image = _image(seed, height, width, channels)
    out = _blend_identity(image, plan_tiles(*args), overlap)
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.array_equal(_bits(out), _bits(image))


def test_identity_keeps_special_values_bit_exact() -> None:
    values = np.array(
        [-0.0, 0.0, np.inf, -np.inf, 1e-45, -1e-45, np.finfo(np.float32).max, 1.0, -1.0],
        dtype=np.float32,
    )
    rng = np.random.default_rng(0)
    image = rng.choice(values, size=(48, 56, 2)).astype(np.float32)
    out = _blend_identity(image, plan_tiles(48, 56, 16, 12), 12)
    assert np.array_equal(_bits(out), _bits(image))


@FAST
@given(cheap_plan_args(), st.floats(-1e6, 1e6, width=32))
def test_constant_in_constant_out(args: tuple[int, int, int, int], value: float) -> None:
    height, width, _, overlap = args
    blender = Blender(height, width, 2, overlap)
    for tile in plan_tiles(*args):
        blender.add(tile, np.full((tile.height, tile.width, 2), value, dtype=np.float32))
    assert (blender.result() == np.float32(value)).all()


@FAST
@given(cheap_plan_args(), st.integers(0, 2**32 - 1))
def test_per_tile_constants_blend_convexly(args: tuple[int, int, int, int], seed: int) -> None:
    height, width, _, overlap = args
    plan = plan_tiles(*args)
    consts = np.random.default_rng(seed).uniform(-10, 10, len(plan)).astype(np.float32)
    blender = Blender(height, width, 1, overlap)
    for tile, c in zip(plan, consts, strict=True):
        blender.add(tile, np.full((tile.height, tile.width, 1), c, dtype=np.float32))
    # Each pixel must stay between the constants of the tiles covering it.
    lo = np.full((height, width), np.inf, dtype=np.float32)
    hi = np.full((height, width), -np.inf, dtype=np.float32)
    for tile, c in zip(plan, consts, strict=True):
        lo[tile.slices] = np.minimum(lo[tile.slices], c)
        hi[tile.slices] = np.maximum(hi[tile.slices], c)
    out = blender.result()[..., 0]
    eps = 1e-5  # float32 rounding of the running mean, |values| <= 10
    assert (out >= lo - eps).all() and (out <= hi + eps).all()


@FAST
@given(cheap_plan_args())
def test_blend_has_no_seams(args: tuple[int, int, int, int]) -> None:
    """Checkerboard 0/1 tile constants: every seam is a full step, yet neighbours stay close.

    A hard seam would jump by 1 between adjacent pixels; the raised-cosine ramp
    spreads the change over ~min(overlap, tile/2) pixels (bound measured <= 1.9).
    """
    height, width, tile, overlap = args
    if tile == 0 or overlap < ALIGN or tile - _step(tile, overlap) < ALIGN:
        return  # one tile, or tiles too close to overlap: seams are then expected
    plan = plan_tiles(*args)
    y_index = {y: i for i, y in enumerate(sorted({t.y0 for t in plan}))}
    x_index = {x: i for i, x in enumerate(sorted({t.x0 for t in plan}))}
    blender = Blender(height, width, 1, overlap)
    for t in plan:
        value = float((y_index[t.y0] + x_index[t.x0]) % 2)
        blender.add(t, np.full((t.height, t.width, 1), value, dtype=np.float32))
    out = blender.result()[..., 0].astype(np.float64)
    jump = max(
        np.abs(np.diff(out, axis=0)).max(initial=0.0),
        np.abs(np.diff(out, axis=1)).max(initial=0.0),
    )
    assert jump <= 2.5 / min(overlap, tile / 2)


@FAST
@given(cheap_plan_args(), st.data())
def test_oom_recovery_replan_keeps_identity_exact(
    args: tuple[int, int, int, int], data: st.DataObject
) -> None:
    """One tile 'fails' and is redone as smaller sub-tiles from `plan_region`."""
    height, width, _, overlap = args
    plan = plan_tiles(*args)
    failed_at = data.draw(st.integers(0, len(plan) - 1))
    failed = plan.tiles[failed_at]
    smaller = shrink_tile(max(failed.height, failed.width), overlap)
    if smaller is None:
        return
    sub = plan_region(failed, *smaller)
    _check_cover(sub, failed, *smaller)
    tiles = [*plan.tiles[:failed_at], *sub, *plan.tiles[failed_at + 1 :]]
    image = _image(data.draw(st.integers(0, 2**32 - 1)), height, width, 3)
    out = _blend_identity(image, tiles, overlap)
    assert np.array_equal(_bits(out), _bits(image))


def test_oom_recovery_with_literal_half_tile() -> None:
    """The brief's form, plan_region(failed, tile // 2, overlap), where it is valid."""
    plan = plan_tiles(96, 120, 64, 16)
    failed = plan.tiles[1]
    tiles = [plan.tiles[0], *plan_region(failed, 32, 16), *plan.tiles[2:]]
    image = _image(1, 96, 120, 3)
    assert np.array_equal(_bits(_blend_identity(image, tiles, 16)), _bits(image))


def test_result_refuses_uncovered_pixels() -> None:
    plan = plan_tiles(32, 32, 16, 8)
    blender = Blender(32, 32, 1, 8)
    for t in plan.tiles[:-1]:
        blender.add(t, np.zeros((t.height, t.width, 1), dtype=np.float32))
    assert not blender.covered
    with pytest.raises(RuntimeError, match="never covered"):
        blender.result()
    last = plan.tiles[-1]
    blender.add(last, np.zeros((last.height, last.width, 1), dtype=np.float32))
    assert blender.covered
    assert blender.result().shape == (32, 32, 1)


def test_add_rejects_mismatched_data() -> None:
    blender = Blender(32, 32, 3, 8)
    with pytest.raises(ValueError, match="shape"):
        blender.add(Tile(0, 0, 16, 16), np.zeros((16, 16, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        blender.add(Tile(0, 0, 16, 16), np.zeros((3, 16, 16), dtype=np.float32))  # CHW
    with pytest.raises(ValueError, match="outside"):
        blender.add(Tile(24, 0, 40, 16), np.zeros((16, 16, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        Blender(32, 32, 3, -1)
    with pytest.raises(ValueError):
        Blender(0, 32, 3, 0)


def test_blender_memory_is_two_buffers_plus_tile_temporaries() -> None:
    """No image-sized temporaries in add/covered/result: memory must stay bounded."""
    size, channels, tile = 512, 3, 32
    plan = plan_tiles(size, size, tile, 8)
    data = np.ones((tile, tile, channels), dtype=np.float32)
    tracemalloc.start()
    try:
        blender = Blender(size, size, channels, 8)
        buffers, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for t in plan:
            blender.add(t, data)
        assert blender.covered
        blender.result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert buffers >= size * size * (channels + 1) * 4
    # Tile temporaries and cached windows (~85 KB) only: even an (H, W) bool mask is 256 KB.
    assert peak - buffers < size * size // 2


def test_tiling_does_not_import_torch() -> None:
    code = "import sys, mprnet_cli.inference.tiling; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
