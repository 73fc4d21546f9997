"""Split-line removal: line geometry, pass weights (crossings included), and the effect on
stand-in networks that draw a line, or step, exactly where MPRNet splits its input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.evaluation.metrics import line_contrast, line_steps, shifted_difference
from mprnet_cli.inference import splitlines
from mprnet_cli.inference.pipeline import TileOptions, restore_array
from mprnet_cli.inference.splitlines import (
    FIX_CORE,
    FIX_FEATHER,
    FIX_LEAD,
    FIX_WINDOW,
    canvas_plan,
    fix_plan,
    fix_weight,
    fix_window,
    line_weight,
    pass_weights,
    restore_fixing_split_lines,
    restore_hiding_split_lines,
    split_lines,
)
from mprnet_cli.inference.tiling import plan_tiles


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.clone()]


class _SplitArtefact(nn.Module):
    """Adds +0.1 on the two rows and two columns next to its input's centre (a "line"), or
    +0.1 below the centre row and +0.05 right of the centre column (a "step")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        out = x.clone()
        if self.kind == "line":
            out[..., h // 2 - 1 : h // 2 + 1, :] += 0.1
            out[..., :, w // 2 - 1 : w // 2 + 1] += 0.1
        else:
            out[..., h // 2 :, :] += 0.1
            out[..., :, w // 2 :] += 0.05
        return [out]


def _engine(module: nn.Module) -> TorchBackend:
    return TorchBackend(module, torch.device("cpu"), channels_last=False)


def test_lines_of_one_pass_and_of_tiles() -> None:
    assert split_lines(plan_tiles(64, 96, 0, 0)) == ([32], [48])
    # 208 px, tiles of at most 128 overlapping 32: [0, 120) and [88, 208), centres 60, 148.
    rows, cols = split_lines(plan_tiles(208, 208, 128, 32))
    assert rows == cols == [60, 148]
    assert split_lines(plan_tiles(128, 64, 64, 0)) == ([32, 96], [32])


def test_line_weight_falls_to_near_zero_on_its_lines_only() -> None:
    w = line_weight(100, 10, [60], band=12)  # the line at canvas 60 = image boundary 50
    assert w[49] < 0.005 and w[50] < 0.005  # the two pixels next to the boundary
    assert w.min() > 0  # never 0: every pixel normalises
    np.testing.assert_array_equal(w[:38], 1.0)
    np.testing.assert_array_equal(w[62:], 1.0)


@pytest.mark.parametrize(
    ("h", "w", "tile"),
    [
        (64, 64, 0),
        (120, 200, 0),
        (300, 260, 128),
        (500, 376, 256),
        (77, 91, 0),
        (260, 300, 256),
        (900, 700, 512),
    ],
)
def test_some_pass_has_full_weight_everywhere_even_at_crossings(h: int, w: int, tile: int) -> None:
    plan = canvas_plan(h, w, tile, 32)
    weights = np.stack(pass_weights(h, w, plan))
    # Near any line of any pass (crossings of one pass's row with another's column
    # included), another pass is far from all of its own lines. (Holds while the plan's
    # tile step is at least 3 shifts, 72 px: not for a 77 px side in tiles of 112, which
    # the balanced planner cuts into two 80 px tiles 48 px apart.)
    assert weights.max(axis=0).min() == pytest.approx(1.0, abs=1e-6)
    rows, cols = split_lines(plan)
    for k, offset in enumerate(splitlines.pass_offsets()):
        for r in rows:
            if 0 < r - offset < h:
                assert weights[k, r - offset].max() < 0.005
        for c in cols:
            if 0 < c - offset < w:
                assert weights[k, :, c - offset].max() < 0.005


def test_identity_network_comes_back_bit_exact() -> None:
    rgb = np.random.default_rng(0).random((70, 90, 3), dtype=np.float32)
    for tile in (0, 48):
        out, stats = restore_hiding_split_lines(
            _engine(_Identity()), rgb, TileOptions(tile=tile, overlap=16)
        )
        np.testing.assert_array_equal(out, rgb)
        # the image's tiles, not passes x tiles; and the passes are no warning-like note
        assert stats.tiles == len(canvas_plan(70, 90, tile, 16))
        assert not [n for n in stats.notes if "pass" in n], stats.notes


@pytest.mark.parametrize("tile", [0, 112])
def test_steps_at_the_split_disappear(tile: int) -> None:
    rows, cols = np.mgrid[0:136, 0:152]
    rgb = np.repeat((0.3 + 0.001 * rows + 0.0005 * cols)[..., None], 3, axis=2).astype(np.float32)
    options = TileOptions(tile=tile)
    engine = _engine(_SplitArtefact("step"))
    plain, _ = restore_array(engine, rgb, options)
    hidden, _ = restore_hiding_split_lines(engine, rgb, options)
    assert np.nanmax(line_steps(plain, 0)) == pytest.approx(0.101, abs=1e-5)
    assert np.nanmax(line_steps(plain, 1)) == pytest.approx(0.0505, abs=1e-5)
    # Each pass steps only where its weight is ~0.004; elsewhere the weights blend the
    # passes' different offsets over the 12-px band: at most 0.1 * pi / (2 * 12) = 0.013
    # on top of the ramp's own 0.001.
    assert np.nanmax(line_steps(hidden, 0)) < 0.015
    assert np.nanmax(line_steps(hidden, 1)) < 0.015
    lines = split_lines(plan_tiles(136, 152, tile, 32 if tile else 0))[0]
    assert line_contrast(line_steps(plain, 0), lines) > 50  # 0.101 over 0.001
    assert line_contrast(line_steps(hidden, 0), lines) < 2


@pytest.mark.parametrize("tile", [0, 112])
def test_lines_at_the_split_disappear_shift_metric(tile: int) -> None:
    """The benchmark's shift-by-8 measure on a tiny case: the line moves with the crop."""
    image = np.random.default_rng(1).random((152, 136, 3), dtype=np.float32) * 0.8
    a_in, b_in = image[:144], image[8:]
    options = TileOptions(tile=tile)
    engine = _engine(_SplitArtefact("line"))
    plain = [restore_array(engine, np.ascontiguousarray(x), options)[0] for x in (a_in, b_in)]
    hidden = [
        restore_hiding_split_lines(engine, np.ascontiguousarray(x), options)[0]
        for x in (a_in, b_in)
    ]
    d_plain = shifted_difference(*plain, 8)
    d_hidden = shifted_difference(*hidden, 8)
    lines = split_lines(plan_tiles(144, 136, tile, 32 if tile else 0))[0]
    assert min(d_plain[r] for r in lines if r > 8) > 0.09  # the line, on every row it crosses
    assert np.nanmax(d_hidden) < 0.002  # 0.1 times a weight share below 0.005 (+ crossings)


# --------------------------------------------------------------------------- fix (default)


def test_fix_window_keeps_its_own_split_away_from_the_line() -> None:
    for size, line in [(128, 64), (1024, 512), (200, 100), (64, 8), (96, 80), (520, 500)]:
        start = fix_window(line, size)
        assert start is not None, (size, line)
        assert start >= 0 and start + FIX_WINDOW <= size
        assert start <= line - FIX_LEAD or start == 0  # the band's rows lie inside
        assert line + FIX_LEAD <= start + FIX_WINDOW or start + FIX_WINDOW == size
        assert abs(start + FIX_WINDOW // 2 - line) >= FIX_LEAD
    assert fix_window(24, 48) is None  # smaller than a window: nothing to re-run
    assert fix_window(32, 64) is None  # a 64-px axis split at 32: a window would be the pass


def test_fix_weight_is_one_on_the_line_and_zero_past_the_band() -> None:
    w = fix_weight(100, [50])
    np.testing.assert_array_equal(w[50 - FIX_CORE : 50 + FIX_CORE], 1.0)
    np.testing.assert_array_equal(w[: 50 - FIX_CORE - FIX_FEATHER], 0.0)
    np.testing.assert_array_equal(w[50 + FIX_CORE + FIX_FEATHER :], 0.0)
    assert np.all(np.diff(w[:50]) >= 0) and np.all(np.diff(w[50:]) <= 0)


def test_fix_plan_counts_row_column_and_crossing_windows() -> None:
    one = fix_plan(plan_tiles(128, 160, 0, 0))
    assert one.rows == ((64, 48),) and one.cols == ((80, 64),)
    assert one.windows == 3
    tiled = fix_plan(plan_tiles(208, 208, 128, 32))  # 2x2 tiles, centres 60 and 148
    assert [r for r, _ in tiled.rows] == [60, 148] and [c for c, _ in tiled.cols] == [60, 148]
    assert tiled.windows == 2 * 2 + 2 * 2 + 2 * 2


def test_fix_identity_network_comes_back_bit_exact() -> None:
    rgb = np.random.default_rng(0).random((150, 170, 3), dtype=np.float32)
    for tile in (0, 96):
        out, stats = restore_fixing_split_lines(
            _engine(_Identity()), rgb, TileOptions(tile=tile, overlap=16)
        )
        np.testing.assert_array_equal(out, rgb)
        plan = plan_tiles(152, 176, tile, 16 if tile else 0)
        assert stats.tiles == len(plan) + fix_plan(plan).windows


@pytest.mark.parametrize("tile", [0, 112])
def test_fix_removes_lines_at_the_split_shift_metric(tile: int) -> None:
    """A line drawn at every network input's centre: gone from the default output,
    crossings and each window's own (column or row) line included."""
    image = np.random.default_rng(1).random((264, 232, 3), dtype=np.float32) * 0.8
    a_in, b_in = image[:256], image[8:]
    options = TileOptions(tile=tile)
    engine = _engine(_SplitArtefact("line"))
    plain = [restore_array(engine, np.ascontiguousarray(x), options)[0] for x in (a_in, b_in)]
    fixed = [
        restore_fixing_split_lines(engine, np.ascontiguousarray(x), options)[0]
        for x in (a_in, b_in)
    ]
    assert np.nanmax(shifted_difference(*plain, 8)) > 0.09
    # The windows never draw inside a band they fill, and only 0-weight pixels carry
    # another input's line: exact up to float32 rounding of x + (y - x) * w.
    assert np.nanmax(shifted_difference(*fixed, 8)) < 1e-5
    np.testing.assert_allclose(fixed[0], a_in, atol=1e-6)


@pytest.mark.parametrize("tile", [0, 112])
def test_fix_spreads_a_step_over_the_feather(tile: int) -> None:
    rows, cols = np.mgrid[0:136, 0:152]
    rgb = np.repeat((0.3 + 0.001 * rows + 0.0005 * cols)[..., None], 3, axis=2).astype(np.float32)
    engine = _engine(_SplitArtefact("step"))
    fixed, _ = restore_fixing_split_lines(engine, rgb, TileOptions(tile=tile))
    # A step is an offset between halves, not a line: the window (no offset across the
    # band) gives way to the pass over FIX_FEATHER px, cos²: slope at most
    # 0.1 * pi / (2 * FIX_FEATHER) = 0.026, plus the ramp's own 0.001.
    bound = 0.1 * np.pi / (2 * FIX_FEATHER) + 0.0011
    assert np.nanmax(line_steps(fixed, 0)) < bound
    assert np.nanmax(line_steps(fixed, 1)) < bound


def test_fix_reports_progress_to_the_end() -> None:
    seen: list[tuple[int, int]] = []
    rgb = np.zeros((128, 128, 3), dtype=np.float32)
    restore_fixing_split_lines(
        _engine(_Identity()), rgb, TileOptions(tile=0), progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (4, 4)  # one pass, then a row, a column and a crossing window
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


class _Offset(nn.Module):
    """Brightens by a constant: what a biased network does, with no line anywhere."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x + 0.02]


@pytest.mark.parametrize(
    "run", [restore_array, restore_fixing_split_lines, restore_hiding_split_lines]
)
@pytest.mark.parametrize("tile", [0, 96])
def test_blending_adds_no_colour_shift_of_its_own(run: Any, tile: int) -> None:
    """Issue 21: outputs ~3 levels darker than targets. Tiles, windows and passes are
    blended as normalised weighted means, so a network's own shift comes out exactly
    (to float32 rounding of values near 1: 1e-6), never more or less."""
    rgb = np.random.default_rng(2).random((200, 184, 3), dtype=np.float32) * 0.9
    out, _ = run(_engine(_Offset()), rgb, TileOptions(tile=tile, overlap=16))
    np.testing.assert_allclose(out - rgb, 0.02, atol=1e-6)
