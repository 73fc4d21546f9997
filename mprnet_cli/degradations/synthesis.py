"""Synthetic noise, motion blur and rain that make training pairs from clean photos.

Why synthetic: we train from clean photographs only, so every (degraded, clean) pair is
made on the fly, batched, on the training device (the GPU machine has no network and
little time, so nothing is precomputed).

Conventions (all functions):

* ``x`` is a float tensor (B, C, H, W) with values in [0, 1]; results keep its shape,
  dtype and device. float16/bfloat16 inputs are processed in float32.
* Randomness comes only from ``generator``. Numbers are drawn *on the generator's
  device* and then moved to ``x.device``: a generator on ``x.device`` is fastest (use it
  for training); a CPU generator gives the same numbers whatever device ``x`` is on
  (used for evaluation). A fixed seed, device and batch shape give identical results
  run to run; CPU and CUDA generators give different streams.
* Noise levels are on the 0..1 scale: ``25 / 255`` is sigma 25 of an 8-bit image.

The fixed benchmark degradations of ``mprnet eval --degrade`` build on these in
`mprnet_cli.degradations.benchmark`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

from mprnet_cli.tasks import Task, task_names

Scalar = float | torch.Tensor

__all__ = [
    "DEGRADATIONS",
    "HEAVY_RAIN",
    "LIGHT_RAIN",
    "RAIN_PRESETS",
    "RainConfig",
    "add_gaussian_noise",
    "add_poisson_gaussian_noise",
    "blur",
    "degrade",
    "linear_to_srgb",
    "quantize_8bit",
    "rain_streaks",
    "random_blur",
    "random_motion_kernels",
    "random_noise",
    "random_rain",
    "srgb_to_linear",
    "streak_kernels",
]


# --------------------------------------------------------------------------- helpers


def _work(x: torch.Tensor) -> torch.Tensor:
    """Validate a batch and return it in a dtype that is safe to compute in."""
    if x.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor in [0, 1], got {x.dtype}")
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _finish(out: torch.Tensor, x: torch.Tensor, clip: bool) -> torch.Tensor:
    if clip:
        out = out.clamp(0.0, 1.0)
    return out.to(x.dtype)


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    """U[0, 1) drawn on the generator's device (float32), moved next to ``like``."""
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return u.to(device=like.device, dtype=like.dtype)


def _normal(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) drawn on the generator's device (float32), moved next to ``like``."""
    n = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return n.to(device=like.device, dtype=like.dtype)


def _per_sample(value: Scalar, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) tensor as a (B, 1, 1, 1) tensor that broadcasts over images."""
    t = torch.as_tensor(value, device=like.device, dtype=like.dtype)
    if t.ndim == 0:
        return t.expand(like.shape[0]).reshape(-1, 1, 1, 1)
    if t.shape != (like.shape[0],):
        raise ValueError(f"per-sample values need shape ({like.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, 1, 1, 1)


def _log_uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB decoding (IEC 61966-2-1): camera noise is added to linear light."""
    x = x.clamp(min=0.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(y: torch.Tensor) -> torch.Tensor:
    """sRGB encoding; negative light is clipped to 0 as a camera's pipeline does."""
    y = y.clamp(min=0.0)
    return torch.where(y <= 0.0031308, 12.92 * y, 1.055 * y.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clip and round to 8 bits: what a saved degraded PNG holds."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


# --------------------------------------------------------------------------- noise


def add_gaussian_noise(
    x: torch.Tensor, sigma: Scalar, generator: torch.Generator, *, clip: bool = True
) -> torch.Tensor:
    """Additive white Gaussian noise, sigma a scalar or one value per sample.

    ``clip=True`` by default because the evaluation protocol clips noisy inputs when
    it saves them as 8-bit images; pass ``clip=False`` for the unclipped AWGN model.
    """
    work = _work(x)
    noise = _normal(tuple(work.shape), generator, work)
    return _finish(work + _per_sample(sigma, work) * noise, x, clip)


def _poisson_gaussian(
    x: torch.Tensor,
    noise: torch.Tensor,
    shot: torch.Tensor,
    read: torch.Tensor,
    linear: torch.Tensor,
) -> torch.Tensor:
    """Heteroscedastic Gaussian approximation of Poisson-Gaussian noise.

    Variance ``shot * signal + read``; where ``linear`` is set the signal is the
    gamma-decoded image and the result is encoded again (noise made in the sensor).
    """
    lin = linear.reshape(-1, 1, 1, 1)
    signal = torch.where(lin, srgb_to_linear(x), x)
    noisy = signal + torch.sqrt(shot * signal.clamp(min=0.0) + read) * noise
    return torch.where(lin, linear_to_srgb(noisy), noisy)


def add_poisson_gaussian_noise(
    x: torch.Tensor,
    shot: Scalar,
    read: Scalar,
    generator: torch.Generator,
    *,
    linear: bool = False,
    clip: bool = True,
) -> torch.Tensor:
    """Signal-dependent noise with variance ``shot * x + read`` (scalars or per sample).

    With ``linear=True`` ``x`` is sRGB-decoded first and re-encoded after, so the noise
    is what a sensor makes in linear light (stronger in the shadows after encoding).
    """
    work = _work(x)
    noise = _normal(tuple(work.shape), generator, work)
    lin = torch.full((work.shape[0],), linear, dtype=torch.bool, device=work.device)
    out = _poisson_gaussian(work, noise, _per_sample(shot, work), _per_sample(read, work), lin)
    return _finish(out, x, clip)


def _correlate_channels(noise: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Give unit noise a per-sample inter-channel correlation ``rho`` (0 = independent).

    Multiplies by the symmetric square root ``a I + b J`` of ``(1 - rho) I + rho J``,
    which keeps each channel's variance at 1 (demosaicking correlates real noise).
    """
    c = noise.shape[1]
    r = rho.reshape(-1, 1, 1, 1)
    a = torch.sqrt(1.0 - r)
    b = (torch.sqrt(a * a + c * r) - a) / c
    return a * noise + b * noise.sum(dim=1, keepdim=True)


def random_noise(
    x: torch.Tensor,
    generator: torch.Generator,
    sigma_max: float = 50 / 255,
    *,
    p_poisson: float = 0.3,
    p_linear: float = 0.7,
    p_correlated: float = 0.3,
    rho_max: float = 0.5,
    shot_range: tuple[float, float] = (1e-4, 1.2e-2),
    clip: bool = True,
) -> torch.Tensor:
    """Blind noise mix for training a denoiser that also copes with camera noise.

    Per sample: Gaussian with sigma ~ U[0, sigma_max]; or, with probability
    ``p_poisson``, Poisson-Gaussian with Brooks et al. (CVPR 2019) camera levels:
    shot ~ log-U(shot_range), log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26^2),
    applied in linear light with probability ``p_linear``. With probability
    ``p_correlated`` the noise is correlated across channels (rho ~ U[0, rho_max]).
    """
    work = _work(x)
    b = work.shape[0]
    u = _uniform((b, 6), generator, work)
    z = _normal((b,), generator, work)
    noise = _normal(tuple(work.shape), generator, work)

    rho = torch.where(u[:, 3] < p_correlated, u[:, 4] * rho_max, torch.zeros_like(u[:, 4]))
    noise = _correlate_channels(noise, rho)

    sigma = (u[:, 0] * sigma_max).reshape(-1, 1, 1, 1)
    gaussian = work + sigma * noise

    shot = _log_uniform(u[:, 5], *shot_range)
    read = torch.exp(2.18 * torch.log(shot) + 1.20 + 0.26 * z)
    camera = _poisson_gaussian(
        work, noise, shot.reshape(-1, 1, 1, 1), read.reshape(-1, 1, 1, 1), u[:, 2] < p_linear
    )

    use_camera = (u[:, 1] < p_poisson).reshape(-1, 1, 1, 1)
    return _finish(torch.where(use_camera, camera, gaussian), x, clip)


# --------------------------------------------------------------------------- motion blur

# Boracchi & Foi (2012) simulate 2000 samples of a 60-px trajectory; we take fewer,
# longer steps and rescale the random terms so the path statistics stay the same.
_BF_STEPS = 2000
_BF_LENGTH = 60.0


def _trajectories(
    u: npt.NDArray[np.float64],
    shake_u: npt.NDArray[np.float64],
    shake_dir: npt.NDArray[np.float64],
    z: npt.NDArray[np.complex128],
    anxiety: npt.NDArray[np.float64],
) -> npt.NDArray[np.complex128]:
    """Camera-shake paths as complex positions (n, steps), in Boracchi-Foi units.

    A constant-speed particle whose velocity gets, each step, a Gaussian kick, a pull
    back towards the start (``centripetal``) and rarely an abrupt near-reversal (the
    impulsive shakes). Time recursion, so a loop over steps, vectorised over kernels.
    """
    n, steps = z.shape[0], z.shape[1] + 1
    r = (_BF_STEPS - 1) / (steps - 1)  # how many original steps one of ours stands for
    step = _BF_LENGTH / (steps - 1)
    centripetal = 0.7 * u[:, 0]
    p_big = np.minimum(0.2 * u[:, 1] * anxiety * r, 1.0)
    gaussian = 10.0 * u[:, 2]
    v = np.exp(2j * np.pi * u[:, 3]) * step
    pos = np.zeros(n, dtype=np.complex128)
    path = np.zeros((n, steps), dtype=np.complex128)
    kick = math.sqrt(r) * anxiety * gaussian
    pull = r * anxiety * centripetal
    for t in range(steps - 1):
        big = shake_u[:, t] < p_big
        shake = np.where(big, 2.0 * v * np.exp(1j * (np.pi + shake_dir[:, t] - 0.5)), 0.0)
        v = v + shake + (kick * z[:, t] - pull * pos) * step
        v = v / np.maximum(np.abs(v), 1e-12) * step
        pos = pos + v
        path[:, t + 1] = pos
    return path


def _splat(path: npt.NDArray[np.complex128], size: int) -> npt.NDArray[np.float64]:
    """Rasterise centred paths into (n, size, size) kernels with bilinear splatting."""
    n = path.shape[0]
    c = (size - 1) / 2
    px = path.real + c
    py = path.imag + c
    x0 = np.clip(np.floor(px), 0, size - 2).astype(np.int64)
    y0 = np.clip(np.floor(py), 0, size - 2).astype(np.int64)
    fx = np.clip(px - x0, 0.0, 1.0)
    fy = np.clip(py - y0, 0.0, 1.0)
    base = np.arange(n, dtype=np.int64)[:, None] * size * size
    idx = np.concatenate(
        [
            base + y0 * size + x0,
            base + y0 * size + x0 + 1,
            base + (y0 + 1) * size + x0,
            base + (y0 + 1) * size + x0 + 1,
        ]
    )
    w = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    k = np.bincount(idx.ravel(), weights=w.ravel(), minlength=n * size * size)
    k = k.reshape(n, size, size)
    out: npt.NDArray[np.float64] = k / k.sum(axis=(1, 2), keepdims=True)
    return out


def random_motion_kernels(
    n: int,
    size: int,
    generator: torch.Generator,
    *,
    max_extent: float | None = None,
    anxiety_range: tuple[float, float] = (2e-4, 5e-3),
    steps: int = 500,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` camera-shake kernels (n, size, size), non-negative, each summing to 1.

    Boracchi & Foi (2012) trajectories (constant-speed random walk with inertia, a pull
    back to the start and impulsive shakes), anxiety log-uniform in ``anxiety_range``
    (lower than their 0.1*U[0,1] default: real kernels such as Levin09 are open strokes,
    not scribbles). Each path is centred on its centroid (so blur does not shift the
    image), scaled to an extent (bounding-box side) ~ U[0, max_extent] (default
    ``size - 2``: from a point to about the kernel width), shrunk if it would leave the
    kernel, and rasterised with bilinear splatting. ``size`` must be odd. Returned on
    ``device`` (default: the generator's device); the time loop runs on the CPU.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    if steps < 2:
        raise ValueError("steps must be >= 2")
    out_device = torch.device(device) if device is not None else generator.device
    if n == 0:
        return torch.zeros((0, size, size), device=out_device)
    gdev = generator.device
    u = torch.rand((n, 6), generator=generator, device=gdev, dtype=torch.float64)
    shake_u = torch.rand((n, steps - 1), generator=generator, device=gdev, dtype=torch.float64)
    shake_dir = torch.rand((n, steps - 1), generator=generator, device=gdev, dtype=torch.float64)
    zz = torch.randn((n, steps - 1, 2), generator=generator, device=gdev, dtype=torch.float64)
    un = u.cpu().numpy()
    lo, hi = anxiety_range
    anxiety = np.exp(math.log(lo) + un[:, 4] * (math.log(hi) - math.log(lo)))
    z = zz[..., 0].cpu().numpy() + 1j * zz[..., 1].cpu().numpy()
    if size == 1:
        return torch.ones((n, 1, 1), device=out_device)

    path = _trajectories(un, shake_u.cpu().numpy(), shake_dir.cpu().numpy(), z, anxiety)
    path = path - path.mean(axis=1, keepdims=True)
    # Scale to the wanted extent (bounding-box side), then shrink to fit if the
    # centroid-centred path would leave the kernel.
    box = np.maximum(np.ptp(path.real, axis=1), np.ptp(path.imag, axis=1))
    wanted = un[:, 5] * (float(size - 2) if max_extent is None else max_extent)
    path = path * (wanted / np.maximum(box, 1e-12))[:, None]
    reach = np.maximum(np.abs(path.real), np.abs(path.imag)).max(axis=1)
    allowed = (size - 1) / 2 - 0.5
    path = path * np.where(reach > allowed, allowed / np.maximum(reach, 1e-12), 1.0)[:, None]
    kernels = _splat(path, size)
    return torch.from_numpy(kernels.astype(np.float32)).to(out_device)


def blur(
    x: torch.Tensor, kernels: torch.Tensor, *, mode: Literal["reflect", "valid"] = "reflect"
) -> torch.Tensor:
    """Convolve each sample with its own kernel (grouped conv; true convolution).

    ``kernels`` is (kh, kw) for all samples or (B, kh, kw). ``reflect`` keeps the size
    (kernel centre at index ``k // 2``); ``valid`` returns (H - kh + 1, W - kw + 1), as
    benchmark blurring does to avoid inventing pixels at the border.
    """
    work = _work(x)
    b, c, h, w = work.shape
    k = kernels.to(device=work.device, dtype=work.dtype)
    if k.ndim == 2:
        k = k.expand(b, *k.shape)
    if k.ndim != 3 or k.shape[0] != b:
        raise ValueError(f"kernels must be (kh, kw) or ({b}, kh, kw), got {tuple(kernels.shape)}")
    kh, kw = int(k.shape[1]), int(k.shape[2])
    weight = k.flip(-2, -1).repeat_interleave(c, dim=0).unsqueeze(1)
    inp = work.reshape(1, b * c, h, w)
    if mode == "reflect":
        pads = (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2)
        pad_mode = (
            "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "replicate"
        )
        inp = functional.pad(inp, pads, mode=pad_mode)
    elif mode != "valid":
        raise ValueError(f"mode must be 'reflect' or 'valid', got {mode!r}")
    elif kh > h or kw > w:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{w} image")
    out = functional.conv2d(inp, weight, groups=b * c)
    return out.reshape(b, c, out.shape[-2], out.shape[-1]).to(x.dtype)


def random_blur(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    size: int = 31,
    noise_max: float = 3 / 255,
    clip: bool = True,
) -> torch.Tensor:
    """Camera-shake blur plus mild Gaussian noise (sigma ~ U[0, noise_max]).

    The default noise range covers the benchmark's 1% (2.55/255), so the model learns
    not to amplify the noise that every real blurry photo also has.
    """
    work = _work(x)
    kernels = random_motion_kernels(work.shape[0], size, generator, device=work.device)
    blurred = blur(work, kernels)
    sigma = _uniform((work.shape[0],), generator, work) * noise_max
    return add_gaussian_noise(blurred, sigma, generator, clip=clip).to(x.dtype)


# --------------------------------------------------------------------------- rain


@dataclass(frozen=True)
class RainConfig:
    """Ranges of the rain-streak model (pixels, degrees from vertical, 0..1 levels).

    After the Photoshop recipe used for Rain100L/H (Yang et al., CVPR 2017): sparse
    random seeds, motion-blurred along one direction into streaks, in 1-3 layers with
    their own angle, length, width, density and brightness, composited additively or
    with screen blending, sometimes under a light veil (rain accumulation).
    """

    layer_probs: tuple[float, ...] = (0.5, 0.3, 0.2)  # P(1 layer), P(2 layers), ...
    angle_sd: float = 15.0  # base angle ~ N(0, angle_sd^2) clipped to +-angle_max
    angle_max: float = 30.0
    layer_jitter: float = 10.0  # each layer's angle = base + U[-jitter, jitter]
    length: tuple[float, float] = (6.0, 40.0)  # streak length, uniform
    width: tuple[float, float] = (0.4, 1.4)  # Gaussian sd across the streak
    density: tuple[float, float] = (2e-4, 5e-3)  # seeds per pixel, log-uniform
    brightness: tuple[float, float] = (0.35, 0.9)  # peak level of a layer, uniform
    p_screen: float = 0.5  # screen blending, else additive
    p_haze: float = 0.3  # probability of a uniform veil
    haze: tuple[float, float] = (0.02, 0.15)  # veil level, uniform


LIGHT_RAIN = RainConfig(layer_probs=(1.0,), density=(2e-4, 1.5e-3), width=(0.4, 0.9), p_haze=0.0)
HEAVY_RAIN = RainConfig(
    layer_probs=(0.0, 0.3, 0.7), density=(1.5e-3, 5e-3), width=(0.7, 1.4), p_haze=0.7
)
RAIN_PRESETS = {"mixed": RainConfig(), "light": LIGHT_RAIN, "heavy": HEAVY_RAIN}


def streak_kernels(
    size: int, angles: torch.Tensor, lengths: torch.Tensor, widths: torch.Tensor
) -> torch.Tensor:
    """Anti-aliased line kernels (N, size, size) with peak ~1 (not normalised).

    ``angles`` in degrees from vertical (positive leans ``\\``: moving down goes right),
    a segment of ``lengths`` px whose ends fade over about 15% of its length, with a
    Gaussian cross-section of sd ``widths`` px, averaged over 3x3 sub-pixel samples.
    Peak 1 rather than sum 1, so one seed of level s makes a streak of level s whatever
    its length.
    """
    r = size // 2
    dev, dt = angles.device, angles.dtype
    sub = torch.tensor([-1 / 3, 0.0, 1 / 3], device=dev, dtype=dt)
    coords = (torch.arange(-r, r + 1, device=dev, dtype=dt)[:, None] + sub[None, :]).reshape(-1)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    theta = torch.deg2rad(angles).reshape(-1, 1, 1)
    dx, dy = torch.sin(theta), torch.cos(theta)
    along = xx * dx + yy * dy
    across = xx * dy - yy * dx
    half = (lengths / 2).reshape(-1, 1, 1)
    sd = widths.reshape(-1, 1, 1)
    taper = (0.15 * half + 0.5) * math.sqrt(2.0)  # soft ends, like a blurred drop
    ends = 0.5 * (1.0 + torch.erf((half - along.abs()) / taper))
    prof = torch.exp(-0.5 * (across / sd) ** 2) * ends
    return prof.reshape(-1, size, 3, size, 3).mean(dim=(2, 4))


def rain_streaks(
    height: int,
    width: int,
    angles: torch.Tensor,
    lengths: torch.Tensor,
    widths: torch.Tensor,
    densities: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Streak layers (N, 1, H, W) in [0, 1], one per row of the parameter tensors.

    Seeds: a uniform field thresholded at the layer's density, each seed with a level in
    [0.3, 1); drawn on a margin so streaks also enter from outside the frame; spread
    along the streak with a grouped 'valid' convolution. Parameters live on the device
    the layers are made on.
    """
    size = 2 * math.ceil(float(lengths.max()) / 2 + 3 * float(widths.max()) + 1) + 1
    kernels = streak_kernels(size, angles, lengths, widths)
    n = angles.shape[0]
    u = _uniform((n, 1, height + size - 1, width + size - 1), generator, angles)
    d = densities.reshape(-1, 1, 1, 1)
    seeds = torch.where(u < d, 0.3 + 0.7 * u / d, torch.zeros_like(u))
    return blur(seeds, kernels, mode="valid").clamp(0.0, 1.0)


def random_rain(
    x: torch.Tensor, generator: torch.Generator, config: RainConfig | None = None
) -> torch.Tensor:
    """Add synthetic rain streaks (see `RainConfig`); never darkens, output in [0, 1]."""
    cfg = config or RainConfig()
    work = _work(x)
    b, _c, h, w = work.shape
    n_layers = len(cfg.layer_probs)
    u = _uniform((b, 4), generator, work)
    z = _normal((b,), generator, work)
    ul = _uniform((b, n_layers, 5), generator, work)

    base = (z * cfg.angle_sd).clamp(-cfg.angle_max, cfg.angle_max)
    angles = base[:, None] + (2 * ul[..., 0] - 1) * cfg.layer_jitter
    lengths = cfg.length[0] + ul[..., 1] * (cfg.length[1] - cfg.length[0])
    widths = cfg.width[0] + ul[..., 2] * (cfg.width[1] - cfg.width[0])
    densities = _log_uniform(ul[..., 3], *cfg.density)
    brightness = cfg.brightness[0] + ul[..., 4] * (cfg.brightness[1] - cfg.brightness[0])

    probs = torch.tensor(cfg.layer_probs, device=work.device, dtype=work.dtype)
    cum = torch.cumsum(probs / probs.sum(), 0)[:-1]
    count = 1 + (u[:, 0:1] >= cum[None, :]).sum(dim=1)
    active = torch.arange(n_layers, device=work.device)[None, :] < count[:, None]

    layers = rain_streaks(
        h,
        w,
        angles.reshape(-1),
        lengths.reshape(-1),
        widths.reshape(-1),
        densities.reshape(-1),
        generator,
    ).reshape(b, n_layers, h, w)
    layers = layers * (brightness * active).reshape(b, n_layers, 1, 1)
    rain = (1 - torch.prod(1 - layers, dim=1, keepdim=True)).clamp(0.0, 1.0)

    screen = (u[:, 1] < cfg.p_screen).reshape(-1, 1, 1, 1)
    out = torch.where(screen, 1 - (1 - work) * (1 - rain), work + rain).clamp(0.0, 1.0)
    veil = torch.where(
        u[:, 2] < cfg.p_haze,
        cfg.haze[0] + u[:, 3] * (cfg.haze[1] - cfg.haze[0]),
        torch.zeros_like(u[:, 3]),
    ).reshape(-1, 1, 1, 1)
    out = 1 - (1 - out) * (1 - veil)
    return _finish(out, x, clip=True)


# --------------------------------------------------------------------------- dispatch

#: Each training degradation under the name a task's `TaskSpec.degradation` gives it.
DEGRADATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "rain": random_rain,
    "motion_blur": random_blur,
    "sensor_noise": random_noise,
}


def degrade(task: Task | str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The training degradation of a task (a `Task` or its name), the one its spec names."""
    try:
        spec = Task(task).spec
    except ValueError:
        raise ValueError(f"unknown task {task!r}; expected {task_names()}") from None
    return DEGRADATIONS[spec.degradation](x, generator)
