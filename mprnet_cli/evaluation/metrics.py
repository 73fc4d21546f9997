"""PSNR and SSIM for `mprnet eval`, following the MPRNet paper's evaluation protocol.

Why this module re-implements the metrics: published numbers come from MATLAB scripts,
and small differences (colour conversion, SSIM window, padding, 8-bit rounding) move
PSNR by tenths of a dB. The choices below are spelled out so results can be compared.

Protocol (`measure`):

* Inputs are float (H, W, 3) RGB in [0, 1] that the caller has already quantised to
  8 bits (``round(x * 255) / 255``), so numbers are for the images as saved to PNG,
  like the paper's results folders, not for the network's raw float output. (The
  paper's SIDD script measures unquantised float output; quantising costs roughly
  0.05 dB at 40 dB.) Dataset scores are means of per-image values, as in the paper.
* ``y_channel=True`` (deraining, as in the paper): both images go through `rgb_to_y`
  (BT.601 studio-swing luma, MATLAB ``rgb2ycbcr``) and are measured on the 0..255
  scale with ``data_range=255``. Y is rounded to an integer (half up), because the
  paper's script runs ``rgb2ycbcr`` on uint8 images, which returns uint8 Y; without
  the rounding PSNR would read a few hundredths of a dB higher near 33-39 dB.
* ``y_channel=False`` (deblurring, denoising): RGB in [0, 1] with ``data_range=1``.
  PSNR pools the squared error over all three channels (as MATLAB ``psnr`` does); SSIM
  is the mean of the three per-channel SSIMs. The paper's deblurring/denoising scripts
  call MATLAB's built-in ``ssim``, which treats an H x W x 3 array as a 3-D volume with
  replicate padding, so RGB SSIM here agrees closely (around the third decimal) but
  not exactly.
* PSNR: ``10 log10(data_range**2 / MSE)`` in float64; identical images give ``inf``.
* SSIM: Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004) exactly as their reference
  ``ssim_index.m``: 11x11 Gaussian window (sigma 1.5, normalised to sum 1), K1=0.01,
  K2=0.03, local statistics over 'valid' windows only (no padding, so the outer 5
  pixels only enter through windows centred further in), mean of the map, no
  downsampling. Images smaller than 11x11 are rejected.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["measure", "psnr", "rgb_to_y", "ssim"]

FloatArray = NDArray[np.floating[Any]]

# ITU-R BT.601 luma for R, G, B in [0, 1], scaled to the 8-bit studio range (MATLAB rgb2ycbcr).
_Y_OFFSET = 16.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)

_WIN = 11
_SIGMA = 1.5
_K1 = 0.01
_K2 = 0.03


def _gaussian_1d() -> NDArray[np.float64]:
    """1-D factor of MATLAB ``fspecial('gaussian', 11, 1.5)``; the 2-D kernel is its outer
    product, so filtering separably gives the same window with fewer operations."""
    x = np.arange(_WIN, dtype=np.float64) - (_WIN - 1) / 2
    g: NDArray[np.float64] = np.exp(-(x * x) / (2.0 * _SIGMA * _SIGMA))
    return g / np.sum(g)


_G = _gaussian_1d()


def _as_rgb01(rgb: FloatArray, who: str) -> NDArray[np.float64]:
    """Validate float (H, W, 3) RGB in [0, 1]; integer input is refused because uint8
    pixels would silently be measured as values up to 255."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{who} expects an (H, W, 3) RGB array; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{who} expects float RGB in [0, 1]; got dtype {arr.dtype} "
            "(divide 8-bit images by 255 first)"
        )
    x = arr.astype(np.float64, copy=False)
    if not (np.all(x >= 0.0) and np.all(x <= 1.0)):  # also catches NaN
        raise ValueError(f"{who} expects RGB values in [0, 1]")
    return x


def rgb_to_y(rgb: FloatArray) -> NDArray[np.float64]:
    """Luma Y = 16 + 65.481 R + 128.553 G + 24.966 B of float RGB in [0, 1].

    Same as MATLAB ``rgb2ycbcr`` (BT.601, studio swing) on the 0..255 scale: black -> 16,
    white -> 235. Returns float64 (H, W), unrounded. Integer (e.g. uint8) input is
    refused; divide by 255 first.
    """
    x = _as_rgb01(rgb, "rgb_to_y")
    y: NDArray[np.float64] = _Y_OFFSET + x @ _Y_WEIGHTS
    return y


def _check_pair(a: FloatArray, b: FloatArray, data_range: float) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number; got {data_range}")


def psnr(a: FloatArray, b: FloatArray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / MSE)``, in float64.

    The MSE pools every element (all channels), like MATLAB ``psnr``. Identical images
    have MSE 0 and give ``math.inf``: callers averaging over a set should decide how to
    treat that rather than get a division error.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    _check_pair(x, y, data_range)
    diff = x - y
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def _filter_valid(img: NDArray[np.float64]) -> NDArray[np.float64]:
    """Gaussian-weighted local mean over windows fully inside the image (MATLAB
    ``filter2(w, img, 'valid')``): filter at full size, then drop the border whose
    windows would need padding, so the padding mode never matters."""
    out = cv2.sepFilter2D(img, cv2.CV_64F, _G, _G, borderType=cv2.BORDER_REFLECT)
    r = _WIN // 2
    valid: NDArray[np.float64] = np.asarray(out, dtype=np.float64)[r:-r, r:-r]
    return valid


def _ssim_2d(x: NDArray[np.float64], y: NDArray[np.float64], c1: float, c2: float) -> float:
    mu1 = _filter_valid(x)
    mu2 = _filter_valid(y)
    mu1_sq = mu1 * mu1
    mu2_sq = mu2 * mu2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = _filter_valid(x * x) - mu1_sq
    sigma2_sq = _filter_valid(y * y) - mu2_sq
    sigma12 = _filter_valid(x * y) - mu1_mu2
    ssim_map = ((2.0 * mu1_mu2 + c1) * (2.0 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return float(np.mean(ssim_map))


def ssim(a: FloatArray, b: FloatArray, data_range: float) -> float:
    """Mean SSIM as Wang et al.'s ``ssim_index.m`` (see module docstring).

    (H, W) images give the plain index. (H, W, C) images give the mean of the
    per-channel indices -- the usual RGB protocol, not MATLAB's volumetric ``ssim``.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    _check_pair(x, y, data_range)
    if x.ndim not in (2, 3):
        raise ValueError(f"ssim expects (H, W) or (H, W, C) images; got shape {x.shape}")
    h, w = x.shape[:2]
    if h < _WIN or w < _WIN:
        raise ValueError(
            f"SSIM needs images of at least {_WIN}x{_WIN} pixels (its Gaussian window); got {h}x{w}"
        )
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    if x.ndim == 2:
        return _ssim_2d(x, y, c1, c2)
    per_channel = [
        _ssim_2d(np.ascontiguousarray(x[..., c]), np.ascontiguousarray(y[..., c]), c1, c2)
        for c in range(x.shape[2])
    ]
    return float(np.mean(per_channel))


def measure(restored: FloatArray, target: FloatArray, *, y_channel: bool) -> tuple[float, float]:
    """(PSNR dB, SSIM) of a restored image against its target, per the paper's protocol.

    Both are 8-bit-quantised float (H, W, 3) RGB in [0, 1]. ``y_channel=True`` measures
    luma on the 0..255 scale (deraining); ``False`` measures RGB in [0, 1] (deblurring,
    denoising). See the module docstring for how this relates to the MATLAB scripts.
    """
    if np.shape(restored) != np.shape(target):
        raise ValueError(
            f"restored and target differ in shape: {np.shape(restored)} vs {np.shape(target)}"
        )
    a = _as_rgb01(restored, "measure")
    b = _as_rgb01(target, "measure")
    if y_channel:
        # MATLAB's rgb2ycbcr on the saved uint8 images returns uint8 Y: round half up
        # (np.round would round halves to even) to reproduce the published numbers.
        ya, yb = np.floor(rgb_to_y(a) + 0.5), np.floor(rgb_to_y(b) + 0.5)
        return psnr(ya, yb, 255.0), ssim(ya, yb, 255.0)
    return psnr(a, b, 1.0), ssim(a, b, 1.0)


# --------------------------------------------------------------------------- split lines
# Line visibility (issue 13): MPRNet cuts its input in halves and quarters, and weights
# that do not hide the cuts leave lines there. These measure such lines on any image;
# benchmarks/bench_split_lines.py applies them to real photos.


def line_steps(image: FloatArray, axis: int) -> NDArray[np.float64]:
    """g[r] = mean |image[r] - image[r-1]| across boundary r, along rows (axis 0) or
    columns (axis 1) of an (H, W, C) image; g[0] is NaN (no boundary before the first)."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 3 or axis not in (0, 1):
        raise ValueError(f"expected an (H, W, C) image and axis 0 or 1, got {x.shape}, {axis}")
    d = np.abs(np.diff(x, axis=axis)).mean(axis=(1 - axis, 2))
    return np.concatenate([[np.nan], d])


def shifted_difference(a: FloatArray, b: FloatArray, shift: int) -> NDArray[np.float64]:
    """D[r] = mean |a[r] - b[r - shift]| over columns and channels, for outputs of two
    crops, `b` cut `shift` rows below `a`; NaN on rows only `a` covers.

    A line that belongs to the network moves with the crop, photo structure does not,
    so D peaks on each run's own split rows and is near 0 elsewhere.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or not 0 < shift < x.shape[0]:
        raise ValueError(
            f"need equal shapes and 0 < shift < height, got {x.shape}, {y.shape}, {shift}"
        )
    d = np.full(x.shape[0], np.nan)
    d[shift:] = np.abs(x[shift:] - y[: x.shape[0] - shift]).mean(axis=(1, 2))
    return d


def line_contrast(steps: NDArray[np.float64], boundaries: list[int]) -> float:
    """Mean over `boundaries` of steps[b] / mean of steps 4-8 positions either side
    (1.0: the boundary is no different from its neighbours); NaN without boundaries."""
    ratios = []
    for b in boundaries:
        near = [i for i in [*range(b - 8, b - 3), *range(b + 4, b + 9)] if 0 < i < len(steps)]
        if 0 < b < len(steps) and near:
            ratios.append(steps[b] / max(float(np.mean(steps[near])), 1e-12))
    return float(np.mean(ratios)) if ratios else math.nan
