"""Synthetic degradations: determinism, statistics and the benchmark protocols.

Training quality depends on these being right in ways a loss curve never shows
(a blur that shifts the image, noise of the wrong level, rain that darkens), so the
statistics are checked directly on small CPU tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mprnet_cli.degradations import benchmark as dg
from mprnet_cli.degradations import synthesis as sy
from mprnet_cli.errors import UsageError
from mprnet_cli.tasks import Task

RandomFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

RANDOM_FNS: dict[str, RandomFn] = {
    "noise": sy.random_noise,
    "blur": sy.random_blur,
    "rain": sy.random_rain,
    "gaussian": lambda x, g: sy.add_gaussian_noise(x, 0.1, g),
    "poisson": lambda x, g: sy.add_poisson_gaussian_noise(x, 0.01, 1e-4, g, linear=True),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(
    seed: int = 0, b: int = 2, size: int = 64, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A smooth random image batch (values well inside [0, 1])."""
    g = gen(1000 + seed)
    coarse = torch.rand((b, 3, size // 8, size // 8), generator=g)
    x = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bilinear", align_corners=False
    )
    return (0.15 + 0.7 * x).to(dtype)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(1.0 / mse)


# --------------------------------------------------------------------------- general


@pytest.mark.parametrize("name", sorted(RANDOM_FNS))
def test_deterministic_per_seed(name: str) -> None:
    fn, x = RANDOM_FNS[name], batch()
    a, b, c = fn(x, gen(7)), fn(x, gen(7)), fn(x, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(RANDOM_FNS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_shape_dtype_device_and_range(name: str, dtype: torch.dtype) -> None:
    x = batch(dtype=dtype)[:, :, :48, :40]
    y = RANDOM_FNS[name](x, gen(1))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.equal(y, x)


def test_generator_convention_cpu_generator_any_device() -> None:
    """The numbers come from the generator's device, whatever x's device is."""
    x = batch()
    if torch.cuda.is_available():
        y = sy.random_noise(x.cuda(), gen(3)).cpu()
        assert torch.allclose(y, sy.random_noise(x, gen(3)), atol=1e-6)
    with pytest.raises(ValueError, match="batch"):
        sy.random_noise(x[0], gen(3))


@pytest.mark.parametrize("task", ["derain", "deblur", "denoise", Task.DENOISE])
def test_degrade_dispatch(task: str) -> None:
    x = batch()
    y = sy.degrade(task, x, gen(2))
    assert y.shape == x.shape and not torch.equal(x, y)
    name = str(getattr(task, "value", task))
    by_task: dict[str, RandomFn] = {
        "derain": sy.random_rain,
        "deblur": sy.random_blur,
        "denoise": sy.random_noise,
    }
    expected = by_task[name](x, gen(2))
    assert torch.equal(y, expected)
    with pytest.raises(ValueError, match="unknown task"):
        sy.degrade("dehaze", x, gen(2))


# --------------------------------------------------------------------------- noise


def test_gaussian_noise_std_and_per_sample_sigma() -> None:
    x = torch.full((2, 3, 64, 64), 0.5)
    sigma = torch.tensor([0.05, 0.15])
    y = sy.add_gaussian_noise(x, sigma, gen(0), clip=False)
    std = (y - x).flatten(1).std(dim=1)
    assert torch.allclose(std, sigma, rtol=0.03)
    assert abs(float((y - x).mean())) < 0.005


def test_gaussian_noise_clip_flag() -> None:
    x = torch.full((1, 3, 32, 32), 0.95)
    assert float(sy.add_gaussian_noise(x, 0.2, gen(0), clip=False).max()) > 1.0
    assert float(sy.add_gaussian_noise(x, 0.2, gen(0)).max()) <= 1.0


def test_poisson_gaussian_variance_grows_with_intensity() -> None:
    levels = torch.tensor([0.1, 0.4, 0.8]).reshape(3, 1, 1, 1)
    x = levels.expand(3, 3, 64, 64).contiguous()
    shot, read = 0.02, 1e-4
    y = sy.add_poisson_gaussian_noise(x, shot, read, gen(0), clip=False)
    var = (y - x).flatten(1).var(dim=1)
    assert var[0] < var[1] < var[2]
    assert torch.allclose(var, shot * levels.flatten() + read, rtol=0.08)
    # In linear light the noise also depends on intensity, and stays finite.
    y_lin = sy.add_poisson_gaussian_noise(x, shot, read, gen(0), linear=True, clip=False)
    assert torch.isfinite(y_lin).all() and float((y_lin - x).abs().mean()) > 0.01


def test_random_noise_levels_cover_the_range() -> None:
    x = torch.full((64, 3, 16, 16), 0.5)
    y = sy.random_noise(x, gen(0), p_poisson=0.0, clip=False)
    std = (y - x).flatten(1).std(dim=1)
    assert float(std.max()) <= 50 / 255 * 1.2
    assert float(std.max()) > 35 / 255 and float(std.min()) < 10 / 255


def test_channel_correlation() -> None:
    n = torch.randn((1, 3, 128, 128), generator=gen(0))
    c = sy._correlate_channels(n, torch.tensor([0.5]))
    flat = c[0].flatten(1)
    corr = torch.corrcoef(flat)
    assert torch.allclose(flat.std(dim=1), torch.ones(3), atol=0.03)
    assert torch.allclose(corr[0, 1], torch.tensor(0.5), atol=0.03)
    assert torch.equal(sy._correlate_channels(n, torch.tensor([0.0])), n)


def test_srgb_round_trip() -> None:
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(sy.linear_to_srgb(sy.srgb_to_linear(x)), x, atol=1e-5)


# --------------------------------------------------------------------------- blur


def test_motion_kernels_are_normalised_and_varied() -> None:
    k = sy.random_motion_kernels(32, 31, gen(0))
    assert k.shape == (32, 31, 31) and k.dtype == torch.float32
    assert float(k.min()) >= 0.0
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(32), atol=1e-5)
    mask = k > 1e-3
    rows, cols = mask.any(dim=2).float(), mask.any(dim=1).float()
    extent = torch.maximum(rows.sum(dim=1), cols.sum(dim=1))  # bounding-box side
    assert int(extent.min()) <= 4 and int(extent.max()) >= 24  # near-points to long paths
    assert torch.equal(k, sy.random_motion_kernels(32, 31, gen(0)))
    with pytest.raises(ValueError, match="odd"):
        sy.random_motion_kernels(1, 30, gen(0))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), half=st.integers(0, 12), seed=st.integers(0, 2**31))
def test_motion_kernels_centred_property(n: int, half: int, seed: int) -> None:
    size = 2 * half + 1
    k = sy.random_motion_kernels(n, size, gen(seed)).double()
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(n, dtype=torch.float64), atol=1e-5)
    grid = torch.arange(size, dtype=torch.float64)
    cy = (k.sum(dim=2) * grid).sum(dim=1)
    cx = (k.sum(dim=1) * grid).sum(dim=1)
    assert torch.allclose(cy, torch.full_like(cy, half), atol=1e-4)
    assert torch.allclose(cx, torch.full_like(cx, half), atol=1e-4)


def test_blur_with_delta_is_identity() -> None:
    x = batch()
    delta = torch.zeros(2, 7, 7)
    delta[:, 3, 3] = 1.0
    assert torch.allclose(sy.blur(x, delta), x, atol=1e-6)


def test_blur_box_kernel_matches_hand_computation() -> None:
    x = batch(b=1, size=16)
    y = sy.blur(x, torch.full((3, 3), 1 / 9))
    padded = np.pad(x[0].numpy(), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    expected = np.zeros_like(x[0].numpy())
    for dy in range(3):
        for dx in range(3):
            expected += padded[:, dy : dy + 16, dx : dx + 16] / 9
    np.testing.assert_allclose(y[0].numpy(), expected, atol=1e-6)


def test_blur_is_a_convolution_not_a_correlation() -> None:
    """A kernel whose mass sits right of centre moves the image right."""
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    k = torch.zeros(3, 3)
    k[1, 2] = 1.0
    y = sy.blur(x, k)
    assert float(y[0, 0, 4, 5]) == 1.0
    valid = sy.blur(x, k, mode="valid")
    assert valid.shape == (1, 1, 7, 7) and float(valid[0, 0, 3, 4]) == 1.0


def test_blur_per_sample_kernels() -> None:
    x = batch()
    k = sy.random_motion_kernels(2, 9, gen(4))
    y = sy.blur(x, k)
    assert torch.allclose(y[1:], sy.blur(x[1:], k[1:]), atol=1e-6)
    with pytest.raises(ValueError, match="kernels"):
        sy.blur(x, torch.ones(3, 5, 5) / 25)


# --------------------------------------------------------------------------- rain


def test_rain_streaks_follow_their_angle() -> None:
    angle = 20.0
    n = 2
    layer = sy.rain_streaks(
        96,
        96,
        torch.full((n,), angle),
        torch.full((n,), 30.0),
        torch.full((n,), 0.8),
        torch.full((n,), 3e-3),
        gen(0),
    )
    assert layer.shape == (n, 1, 96, 96)
    assert float(layer.min()) >= 0.0 and float(layer.max()) <= 1.0
    assert float(layer.mean()) > 0.01
    gy, gx = torch.gradient(layer[:, 0].double(), dim=(1, 2))
    t = math.radians(angle)
    dx, dy = math.sin(t), math.cos(t)
    along = (dx * gx + dy * gy).pow(2).sum()
    across = (dy * gx - dx * gy).pow(2).sum()
    assert float(across / along) > 4.0


def test_rain_only_brightens_and_is_mostly_bright_structure() -> None:
    x = batch(b=4)
    cfg = sy.RainConfig(p_screen=0.0, p_haze=0.0)
    y = sy.random_rain(x, gen(5), cfg)
    assert float((y - x).min()) >= -1e-6
    added = (y - x).mean(dim=1)
    assert float((added > 0.05).float().mean()) < 0.5  # sparse streaks, not a wash
    y_screen = sy.random_rain(x, gen(5), sy.RainConfig(p_screen=1.0, p_haze=1.0))
    assert float((y_screen - x).min()) >= -1e-6


def test_rain_presets_differ_in_amount() -> None:
    x = batch(b=4, size=96)
    light = (sy.random_rain(x, gen(1), sy.LIGHT_RAIN) - x).mean()
    heavy = (sy.random_rain(x, gen(1), sy.HEAVY_RAIN) - x).mean()
    assert float(heavy) > 2 * float(light) > 0


# --------------------------------------------------------------------------- benchmarks


def textured_grey(size: int = 128) -> np.ndarray:
    """Mid-grey with texture in [0.3, 0.7], so sigma-25 noise is rarely clipped."""
    rng = np.random.default_rng(0)
    base = 0.5 + 0.2 * np.sin(np.arange(size) / 3.0)[:, None] * np.cos(np.arange(size) / 5.0)
    img = base[..., None] + rng.uniform(-0.01, 0.01, (size, size, 3))
    return (np.round(img * 255) / 255).astype(np.float32)


def test_noise_25_gives_the_known_psnr() -> None:
    deg = dg.parse_degradation("noise:25")
    image = textured_grey()
    noisy, target = deg(image, seed=0)
    assert noisy.dtype == np.float32 and noisy.shape == image.shape
    np.testing.assert_array_equal(target, image)
    np.testing.assert_array_equal(np.round(noisy * 255), noisy * 255)  # 8-bit levels
    assert abs(psnr(noisy, image) - 20.17) < 0.1
    again, _ = deg(image, seed=0)
    other, _ = deg(image, seed=1)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, other)


def test_blur_kernel_file_valid_shapes_and_alignment(tmp_path: Path) -> None:
    k = np.zeros((5, 5), np.float32)
    k[2, 2] = 1.0
    path = tmp_path / "delta.npy"
    np.save(path, k)
    image = textured_grey(40)
    deg = dg.parse_degradation(f"blur:{path}:noise=0")
    degraded, target = deg(image, seed=3)
    assert degraded.shape == target.shape == (36, 36, 3)
    np.testing.assert_allclose(degraded, target, atol=1 / 510)
    noisy, _ = dg.parse_degradation(f"blur:{path}")(image, seed=3)
    assert 0.005 < float(np.std(noisy - target)) < 0.015  # 2.55 levels by default


def levin_dir(tmp_path: Path) -> Path:
    """Stand-ins of the Levin09 kernels' sizes (tests read only what the repository holds)."""
    for i, size in enumerate((19, 17, 15, 27, 13, 21, 23, 23), start=1):
        np.save(tmp_path / f"kernel_{i}.npy", np.ones((size, size), np.float32))
    return tmp_path


def test_blur_levin_valid_shapes(tmp_path: Path) -> None:
    folder = levin_dir(tmp_path)
    image = textured_grey(64)
    deg = dg.parse_degradation("blur:levin:4", kernels_dir=folder)
    degraded, target = deg(image, seed=0)
    assert degraded.shape == target.shape == (64 - 26, 64 - 26, 3)
    cycling = dg.parse_degradation("blur:levin", kernels_dir=folder)
    assert isinstance(cycling, dg.BlurDegradation) and len(cycling.kernels) == 8
    sizes = [cycling(image, seed=s)[0].shape[0] for s in range(8)]
    assert sizes == [64 - s + 1 for s in (19, 17, 15, 27, 13, 21, 23, 23)]


def test_rain_spec_is_deterministic() -> None:
    image = textured_grey(64)
    deg = dg.parse_degradation("rain:3:heavy")
    assert isinstance(deg, dg.RainDegradation) and deg.spec == "rain:3:heavy"
    a, target = deg(image, seed=1)
    b, _ = deg(image, seed=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(target, image)
    assert not np.array_equal(a, dg.parse_degradation("rain:4:heavy")(image, seed=1)[0])
    assert float((a - image).min()) >= -1 / 255


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("noise:25", dg.NoiseDegradation),
        ("NOISE:15.5", dg.NoiseDegradation),
        ("rain", dg.RainDegradation),
        ("rain:7", dg.RainDegradation),
        ("rain:light", dg.RainDegradation),
        ("blur:levin:1:noise=0", dg.BlurDegradation),
    ],
)
def test_parse_good_specs(spec: str, kind: type, tmp_path: Path) -> None:
    deg = dg.parse_degradation(spec, kernels_dir=levin_dir(tmp_path))
    assert isinstance(deg, kind)
    assert dg.parse_degradation(deg.spec, kernels_dir=levin_dir(tmp_path)).spec == deg.spec


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "noise",
        "noise:",
        "noise:abc",
        "noise:0",
        "noise:-5",
        "noise:nan",
        "noise:300",
        "blur",
        "blur:levin:0",
        "blur:levin:9",
        "blur:levin:1:noise=x",
        "blur:levin:1:noise=-1",
        "blur:gauss",
        "blur:/does/not/exist.npy",
        "rain:wet",
        "rain:1:2:storm",
        "haze:3",
    ],
)
def test_parse_bad_specs(spec: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="valid forms: noise:SIGMA"):
        dg.parse_degradation(spec, kernels_dir=levin_dir(tmp_path))


def test_parse_rejects_bad_kernel_files(tmp_path: Path) -> None:
    np.save(tmp_path / "neg.npy", -np.ones((3, 3)))
    np.save(tmp_path / "3d.npy", np.ones((3, 3, 3)))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    for name in ("neg.npy", "3d.npy", "junk.npy"):
        with pytest.raises(UsageError):
            dg.parse_degradation(f"blur:{tmp_path / name}")
    with pytest.raises(UsageError, match="not found"):
        dg.parse_degradation("blur:levin", kernels_dir=tmp_path)
