"""Tests for mprnet_cli.evaluation.metrics.

Expected values are worked out by hand (arithmetic in the comments) or by a deliberately
naive float64 loop over SSIM windows written here, independent of the module's filtering.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from mprnet_cli.evaluation.metrics import (
    line_contrast,
    line_steps,
    measure,
    psnr,
    rgb_to_y,
    shifted_difference,
    ssim,
)

F64 = NDArray[np.float64]

# C1 = (K1 L)^2, C2 = (K2 L)^2 for the two data ranges used.
C1_255 = (0.01 * 255) ** 2  # 2.55^2 = 6.5025
C1_1 = (0.01 * 1) ** 2  # 0.0001


def _pixel(r: float, g: float, b: float) -> NDArray[np.float32]:
    return np.array([[[r, g, b]]], dtype=np.float32)


# ---------------------------------------------------------------- rgb_to_y


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((1.0, 0.0, 0.0), 81.481),  # 16 + 65.481
        ((0.0, 1.0, 0.0), 144.553),  # 16 + 128.553
        ((0.0, 0.0, 1.0), 40.966),  # 16 + 24.966
        ((1.0, 1.0, 1.0), 235.0),  # 16 + 65.481 + 128.553 + 24.966 = 16 + 219
        ((0.0, 0.0, 0.0), 16.0),  # offset only
        ((0.5, 0.5, 0.5), 125.5),  # 16 + 219 / 2
    ],
)
def test_rgb_to_y_reference_colours(rgb: tuple[float, float, float], expected: float) -> None:
    y = rgb_to_y(_pixel(*rgb))
    assert y.shape == (1, 1)
    assert y.dtype == np.float64
    assert y[0, 0] == pytest.approx(expected, abs=1e-9)


def test_rgb_to_y_is_per_pixel_and_keeps_shape() -> None:
    img = np.zeros((2, 3, 3), dtype=np.float64)
    img[1, 2] = (1.0, 0.0, 0.0)
    y = rgb_to_y(img)
    assert y.shape == (2, 3)
    expected = np.full((2, 3), 16.0)
    expected[1, 2] = 81.481
    np.testing.assert_allclose(y, expected, atol=1e-9)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 3), dtype=np.uint8),  # 8-bit must be divided by 255 first
        np.full((4, 4, 3), 1.5),  # out of [0, 1]
        np.full((4, 4, 3), -0.1),
        np.full((4, 4, 3), np.nan),
        np.zeros((4, 4)),  # not RGB
        np.zeros((4, 4, 4)),
    ],
)
def test_rgb_to_y_rejects_bad_input(bad: NDArray[np.generic]) -> None:
    with pytest.raises(ValueError):
        rgb_to_y(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- psnr


def test_psnr_one_pixel_off_by_a_tenth() -> None:
    a = np.zeros((2, 2))
    b = a.copy()
    b[0, 0] = 0.1
    # MSE = 0.1^2 / 4 = 0.0025; PSNR = 10 log10(1 / 0.0025) = 10 log10(400) = 26.0206 dB
    assert psnr(a, b, 1.0) == pytest.approx(26.0206, abs=1e-4)
    assert psnr(a, b, 1.0) == pytest.approx(10 * math.log10(400), rel=1e-12)


def test_psnr_on_255_scale() -> None:
    a = np.full((2, 2), 100.0)
    b = a.copy()
    b[1, 1] = 110.0
    # MSE = 10^2 / 4 = 25; PSNR = 10 log10(255^2 / 25) = 10 log10(2601) = 20 log10(51) = 34.1514
    assert psnr(a, b, 255.0) == pytest.approx(34.1514, abs=1e-4)


def test_psnr_pools_all_channels() -> None:
    a = np.zeros((1, 2, 3))
    b = a.copy()
    b[0, 0, 1] = 0.2
    # one of 6 elements off by 0.2: MSE = 0.04 / 6; PSNR = 10 log10(150) = 21.7609 dB
    assert psnr(a, b, 1.0) == pytest.approx(21.7609, abs=1e-4)


def test_psnr_identical_is_inf() -> None:
    a = np.random.default_rng(0).random((5, 7, 3))
    assert psnr(a, a.copy(), 1.0) == math.inf


def test_psnr_float32_inputs_are_computed_in_float64() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((64, 64, 3)).astype(np.float32)
    b = (a + np.float32(1e-4) * rng.standard_normal(a.shape).astype(np.float32)).astype(np.float32)
    assert psnr(a, b, 1.0) == psnr(a.astype(np.float64), b.astype(np.float64), 1.0)


def test_psnr_rejects_shape_mismatch_and_bad_range() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((2, 2)), np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((2, 2)), np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="empty"):
        psnr(np.zeros((0, 2)), np.zeros((0, 2)), 1.0)


# ---------------------------------------------------------------- ssim reference


def _reference_window() -> F64:
    """fspecial('gaussian', 11, 1.5) from its definition, element by element."""
    w = np.empty((11, 11))
    for i in range(11):
        for j in range(11):
            w[i, j] = math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5**2))
    normalised: F64 = w / w.sum()
    return normalised


def _reference_ssim(x: F64, y: F64, data_range: float) -> float:
    """Naive SSIM: every fully-inside 11x11 window, two-pass weighted statistics."""
    w = _reference_window()
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    h, wd = x.shape
    values = []
    for i in range(h - 10):
        for j in range(wd - 10):
            px = x[i : i + 11, j : j + 11]
            py = y[i : i + 11, j : j + 11]
            mx = float((w * px).sum())
            my = float((w * py).sum())
            vx = float((w * (px - mx) ** 2).sum())
            vy = float((w * (py - my) ** 2).sum())
            cxy = float((w * (px - mx) * (py - my)).sum())
            values.append(
                ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
            )
    return float(np.mean(values))


def test_reference_window_is_fspecial() -> None:
    # Centre of fspecial('gaussian', 11, 1.5): 1 / (sum_k exp(-k^2 / 4.5))^2 for k = -5..5,
    # sum = 1 + 2 (0.800737 + 0.411112 + 0.135335 + 0.028566 + 0.003866) = 3.759233,
    # centre = 1 / 3.759233^2 = 1 / 14.131831 = 0.070762
    w = _reference_window()
    assert w[5, 5] == pytest.approx(0.070762, abs=1e-6)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)


# ---------------------------------------------------------------- ssim


def test_ssim_identical_is_exactly_one() -> None:
    rng = np.random.default_rng(2)
    gray = rng.random((17, 23))
    rgb = rng.random((12, 11, 3))
    assert ssim(gray, gray.copy(), 1.0) == 1.0
    assert ssim(rgb, rgb.copy(), 1.0) == 1.0
    assert ssim(gray * 255, gray * 255, 255.0) == 1.0


@pytest.mark.parametrize("shape", [(11, 11), (13, 17)])
def test_ssim_constant_images_have_luminance_term_only(shape: tuple[int, int]) -> None:
    # Constant windows: sigma1 = sigma2 = sigma12 = 0, so the contrast-structure term is
    # (0 + C2) / (0 + C2) = 1 and every window gives the luminance term:
    # (2 c1 c2 + C1) / (c1^2 + c2^2 + C1) with c1 = 100, c2 = 110, C1 = 6.5025:
    # (22000 + 6.5025) / (10000 + 12100 + 6.5025) = 22006.5025 / 22106.5025 = 0.9954764
    a = np.full(shape, 100.0)
    b = np.full(shape, 110.0)
    expected = 22006.5025 / 22106.5025
    assert expected == pytest.approx(0.9954764, abs=1e-7)
    assert ssim(a, b, 255.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("gain", "offset", "data_range"),
    [(1.0, 0.0, 1.0), (0.5, 0.2, 1.0), (1.3, -0.1, 1.0), (-1.0, 1.0, 1.0), (0.8, 20.0, 255.0)],
)
def test_ssim_matches_naive_loop_for_affine_change(
    gain: float, offset: float, data_range: float
) -> None:
    rng = np.random.default_rng(3)
    x = rng.random((16, 16)) * data_range
    y = gain * x + offset
    y = y + 0.02 * data_range * rng.standard_normal(x.shape)  # not exactly affine
    expected = _reference_ssim(x, y, data_range)
    assert ssim(x, y, data_range) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_ssim_rgb_is_mean_of_channels() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((14, 15, 3))
    y = np.clip(x * 0.9 + 0.05 * rng.standard_normal(x.shape), 0, 1)
    per_channel = [_reference_ssim(x[..., c], y[..., c], 1.0) for c in range(3)]
    assert ssim(x, y, 1.0) == pytest.approx(sum(per_channel) / 3, rel=1e-10)


def test_ssim_is_symmetric() -> None:
    rng = np.random.default_rng(5)
    x = rng.random((20, 18, 3))
    y = rng.random((20, 18, 3))
    assert ssim(x, y, 1.0) == pytest.approx(ssim(y, x, 1.0), rel=1e-13)


def test_ssim_scales_with_data_range() -> None:
    # C1, C2 scale with L^2 exactly as the statistics do, so SSIM is scale invariant.
    rng = np.random.default_rng(6)
    x = rng.random((16, 16))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    assert ssim(x * 255, y * 255, 255.0) == pytest.approx(ssim(x, y, 1.0), rel=1e-9)


def test_ssim_decreases_with_noise_level() -> None:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    seed_image = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy) + 0.05 * rng.standard_normal((32, 32))
    noise = rng.standard_normal((32, 32))
    levels = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    scores = [ssim(seed_image, seed_image + s * noise, 1.0) for s in levels]
    assert scores[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(scores)), scores


@pytest.mark.parametrize("shape", [(10, 11), (11, 10), (5, 5, 3)])
def test_ssim_rejects_images_smaller_than_window(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros(shape), np.zeros(shape), 1.0)


def test_ssim_rejects_shape_mismatch_and_wrong_rank() -> None:
    with pytest.raises(ValueError, match="shape"):
        ssim(np.zeros((12, 12)), np.zeros((12, 13)), 1.0)
    with pytest.raises(ValueError, match="H, W"):
        ssim(np.zeros((12, 12, 3, 1)), np.zeros((12, 12, 3, 1)), 1.0)


# ---------------------------------------------------------------- measure


def test_measure_rgb_by_hand() -> None:
    restored = np.full((11, 11, 3), 0.5, dtype=np.float32)
    target = np.full((11, 11, 3), 0.625, dtype=np.float32)  # both exact in binary
    p, s = measure(restored, target, y_channel=False)
    # MSE = 0.125^2 = 1/64; PSNR = 10 log10(64) = 18.0618 dB
    assert p == pytest.approx(18.0618, abs=1e-4)
    # constant images, L = 1, C1 = 0.0001: (2*0.5*0.625 + 0.0001) / (0.25 + 0.390625 + 0.0001)
    # = 0.6251 / 0.640725 = 0.9756136 in each channel
    assert s == pytest.approx(0.6251 / 0.640725, rel=1e-12)


def test_measure_y_by_hand() -> None:
    restored = np.full((11, 11, 3), 0.5, dtype=np.float32)
    target = np.full((11, 11, 3), 0.625, dtype=np.float32)
    p, s = measure(restored, target, y_channel=True)
    # Y = 16 + 219 g: 125.5 and 16 + 136.875 = 152.875, rounded half up as MATLAB's
    # uint8 rgb2ycbcr does: 126 and 153; diff 27, MSE = 729
    # PSNR = 10 log10(65025 / 729) = 10 log10(89.1975) = 19.5035 dB
    assert p == pytest.approx(19.5035, abs=1e-4)
    # luminance only, C1 = 6.5025:
    # (2*126*153 + C1) / (126^2 + 153^2 + C1) = 38562.5025 / 39291.5025 = 0.9814466
    assert s == pytest.approx(38562.5025 / 39291.5025, rel=1e-12)


def test_measure_y_is_rgb_to_y_then_255_range() -> None:
    rng = np.random.default_rng(8)
    target = (np.round(rng.random((16, 20, 3)) * 255) / 255).astype(np.float32)
    noisy = np.clip(target + 0.05 * rng.standard_normal(target.shape), 0, 1)
    restored = (np.round(noisy * 255) / 255).astype(np.float32)
    ya, yb = np.floor(rgb_to_y(restored) + 0.5), np.floor(rgb_to_y(target) + 0.5)
    assert np.array_equal(ya, np.round(ya)) and ya.min() >= 16 and ya.max() <= 235
    assert measure(restored, target, y_channel=True) == (psnr(ya, yb, 255.0), ssim(ya, yb, 255.0))
    assert measure(restored, target, y_channel=False) == (
        psnr(restored, target, 1.0),
        ssim(restored, target, 1.0),
    )


def test_measure_gets_worse_with_noise_on_8bit_images() -> None:
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:24, 0:24] / 23.0
    base = np.stack([0.5 + 0.3 * np.sin(5 * xx + k) * np.cos(3 * yy) for k in range(3)], axis=-1)
    target = (np.round(base * 255) / 255).astype(np.float32)
    noise = rng.standard_normal(target.shape)
    for y_channel in (False, True):
        results = []
        for sigma in (0.02, 0.05, 0.1, 0.2):
            noisy = np.clip(target + sigma * noise, 0, 1)
            restored = (np.round(noisy * 255) / 255).astype(np.float32)
            results.append(measure(restored, target, y_channel=y_channel))
        psnrs = [r[0] for r in results]
        ssims = [r[1] for r in results]
        assert psnrs == sorted(psnrs, reverse=True) and len(set(psnrs)) == 4
        assert ssims == sorted(ssims, reverse=True) and len(set(ssims)) == 4


def test_measure_rejects_bad_input() -> None:
    ok = np.zeros((12, 12, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        measure(ok, np.zeros((12, 13, 3), dtype=np.float32), y_channel=False)
    with pytest.raises(ValueError, match="RGB"):
        measure(np.zeros((12, 12), np.float32), np.zeros((12, 12), np.float32), y_channel=True)
    with pytest.raises(ValueError, match="float"):
        measure(np.zeros((12, 12, 3), np.uint8), ok, y_channel=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        measure(ok + 2, ok, y_channel=False)
    with pytest.raises(ValueError, match="at least 11x11"):
        measure(ok[:10], ok[:10], y_channel=True)


# ---------------------------------------------------------------- properties

_side = st.integers(min_value=11, max_value=16)
_unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=64)


@st.composite
def _image_pairs(draw: st.DrawFn, channels: int | None = None) -> tuple[F64, F64]:
    shape: tuple[int, ...] = (draw(_side), draw(_side))
    if channels is not None:
        shape = (*shape, channels)
    a = draw(arrays(np.float64, shape, elements=_unit))
    b = draw(arrays(np.float64, shape, elements=_unit))
    return a, b


@settings(max_examples=60, deadline=None)
@given(_image_pairs())
def test_property_psnr_symmetric_and_nonnegative(pair: tuple[F64, F64]) -> None:
    a, b = pair
    forward = psnr(a, b, 1.0)
    assert forward == psnr(b, a, 1.0)
    assert forward >= 0.0  # values in [0, 1] => MSE <= 1
    assert psnr(a, a, 1.0) == math.inf


@settings(max_examples=60, deadline=None)
@given(_image_pairs(channels=3))
def test_property_ssim_bounded_symmetric(pair: tuple[F64, F64]) -> None:
    a, b = pair
    value = ssim(a, b, 1.0)
    assert -1.0 - 1e-12 <= value <= 1.0 + 1e-12
    assert value == pytest.approx(ssim(b, a, 1.0), rel=1e-12, abs=1e-15)
    assert ssim(a, a, 1.0) == 1.0


@settings(max_examples=40, deadline=None)
@given(_image_pairs(channels=3))
def test_property_measure_y_agrees_with_parts(pair: tuple[F64, F64]) -> None:
    a, b = (x.astype(np.float32) for x in pair)
    p, s = measure(a, b, y_channel=True)
    assert s <= 1.0 + 1e-12
    assert p >= 0.0  # |Y difference| <= 219 < 255


def test_line_metrics_on_known_profiles() -> None:
    img = np.zeros((20, 10, 3), np.float32)
    img[10:] = 1.0
    g = line_steps(img, 0)
    assert np.isnan(g[0]) and g[10] == 1.0 and np.nansum(g) == 1.0
    np.testing.assert_array_equal(line_steps(img, 1)[1:], 0.0)
    b = np.zeros_like(img)
    b[5:] = 1.0  # the same edge, 5 rows higher in a crop cut 5 rows lower
    d = shifted_difference(img, b, 5)
    assert np.isnan(d[:5]).all() and np.nansum(d) == 0.0
    assert line_contrast(np.array([np.nan, *[1.0] * 8, 3.0, *[1.0] * 8]), [9]) == 3.0
    with pytest.raises(ValueError):
        shifted_difference(img, b[:10], 5)
