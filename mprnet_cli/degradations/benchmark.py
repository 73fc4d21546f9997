"""The fixed benchmark degradations of ``mprnet eval --degrade``: (clean image, seed) in,
(degraded, target) out, deterministic, on single numpy images.

They reuse the training synthesis (`mprnet_cli.degradations.synthesis`) with a CPU generator
seeded per image, so a benchmark repeats exactly on any machine.
"""

from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from mprnet_cli.degradations.synthesis import (
    RAIN_PRESETS,
    RainConfig,
    add_gaussian_noise,
    blur,
    quantize_8bit,
    random_rain,
)
from mprnet_cli.errors import InputError, UsageError

FloatImage = npt.NDArray[np.float32]

__all__ = [
    "BlurDegradation",
    "Degradation",
    "NoiseDegradation",
    "RainDegradation",
    "default_kernels_dir",
    "parse_degradation",
]


_FORMS = (
    "valid forms: noise:SIGMA (8-bit levels, e.g. noise:25); blur:levin:K (Levin09 "
    "kernel K=1..8); blur:levin (kernel (seed mod 8)+1 per image); blur:PATH.npy; "
    "each blur optionally followed by :noise=N (levels, default 2.55); "
    "rain[:SEED][:light|:heavy]"
)
DEFAULT_BLUR_NOISE = 2.55


def default_kernels_dir() -> Path:
    """Levin09 kernels in the shared test data (MPRNET_SHARED overrides its location)."""
    shared = os.environ.get("MPRNET_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared"
    return root / "testdata" / "Levin09_kernels"


def _to_batch(image: FloatImage) -> torch.Tensor:
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ValueError("expected an (H, W, C) numpy image")
    arr = np.ascontiguousarray(image, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


def _to_image(batch: torch.Tensor) -> FloatImage:
    out: FloatImage = np.ascontiguousarray(
        batch[0].permute(1, 2, 0).cpu().numpy(), dtype=np.float32
    )
    return out


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed % (1 << 63))


class Degradation(ABC):
    """A deterministic benchmark degradation: (clean image, seed) -> (degraded, target).

    Images are float32 (H, W, 3) in [0, 1]. The degraded image is clipped and rounded to
    8 bits, as the benchmark files it stands for would be. Use seed = base + image index
    so that every image differs yet runs repeat exactly. Random numbers come from a CPU
    generator, so results do not depend on the device.
    """

    @property
    @abstractmethod
    def spec(self) -> str:
        """The canonical ``--degrade`` text."""

    @abstractmethod
    def __call__(self, image: FloatImage, seed: int) -> tuple[FloatImage, FloatImage]:
        """Degrade one image; the target is the clean image, cropped where needed."""


@dataclass(frozen=True)
class NoiseDegradation(Degradation):
    """AWGN of ``sigma`` 8-bit levels, clipped and quantised (the standard protocol)."""

    sigma: float

    @property
    def spec(self) -> str:
        return f"noise:{self.sigma:g}"

    def __call__(self, image: FloatImage, seed: int) -> tuple[FloatImage, FloatImage]:
        x = _to_batch(image)
        y = add_gaussian_noise(x, self.sigma / 255.0, _generator(seed), clip=True)
        return _to_image(quantize_8bit(y)), _to_image(x)


@dataclass(frozen=True, eq=False)
class BlurDegradation(Degradation):
    """'valid' convolution with a fixed kernel plus AWGN of ``noise`` levels.

    With several kernels (``blur:levin``) image ``seed`` uses kernel ``seed % len``.
    The target is the clean image cropped by the kernel's margins, so it is aligned
    pixel for pixel with the smaller degraded image.
    """

    kernels: tuple[FloatImage, ...]
    name: str
    noise: float = DEFAULT_BLUR_NOISE

    @property
    def spec(self) -> str:
        return f"blur:{self.name}:noise={self.noise:g}"

    def kernel_for(self, seed: int) -> FloatImage:
        return self.kernels[seed % len(self.kernels)]

    def __call__(self, image: FloatImage, seed: int) -> tuple[FloatImage, FloatImage]:
        k = self.kernel_for(seed)
        kh, kw = k.shape
        h, w = image.shape[:2]
        if h < kh or w < kw:
            raise InputError(
                f"a {h}x{w} image is smaller than the {kh}x{kw} blur kernel; "
                "use larger images or a smaller kernel"
            )
        x = _to_batch(image)
        y = blur(x, torch.from_numpy(k), mode="valid")
        if self.noise > 0:
            y = add_gaussian_noise(y, self.noise / 255.0, _generator(seed), clip=True)
        top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
        target = image[top : top + h - kh + 1, left : left + w - kw + 1]
        return _to_image(quantize_8bit(y)), np.ascontiguousarray(target, dtype=np.float32)


@dataclass(frozen=True)
class RainDegradation(Degradation):
    """Our synthetic rain with a fixed base seed and preset (mixed, light, heavy)."""

    base_seed: int = 0
    preset: str = "mixed"
    config: RainConfig = field(default_factory=RainConfig)

    @property
    def spec(self) -> str:
        return f"rain:{self.base_seed}:{self.preset}"

    def __call__(self, image: FloatImage, seed: int) -> tuple[FloatImage, FloatImage]:
        x = _to_batch(image)
        y = random_rain(x, _generator(self.base_seed * 1_000_003 + seed), self.config)
        return _to_image(quantize_8bit(y)), _to_image(x)


def _number(text: str, spec: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"invalid --degrade {spec!r}: {what} {text!r} is not a number; {_FORMS}"
        ) from None
    if not math.isfinite(value):
        raise UsageError(f"invalid --degrade {spec!r}: {what} must be finite; {_FORMS}")
    return value


def _load_kernel(path: Path, spec: str) -> FloatImage:
    """Read a 2-D kernel; renormalise to sum 1 (files are often saved in float16/32)."""
    try:
        k = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"invalid --degrade {spec!r}: cannot read kernel {path} ({exc}); {_FORMS}"
        ) from None
    if k.ndim != 2 or not np.issubdtype(k.dtype, np.number) or not np.all(np.isfinite(k)):
        raise UsageError(f"invalid --degrade {spec!r}: {path} is not a finite 2-D array; {_FORMS}")
    k = k.astype(np.float64)
    if k.min() < -1e-6 or k.sum() <= 0:
        raise UsageError(
            f"invalid --degrade {spec!r}: kernel {path} must be non-negative "
            f"with a positive sum; {_FORMS}"
        )
    k = np.clip(k, 0.0, None)
    out: FloatImage = (k / k.sum()).astype(np.float32)
    return out


def parse_degradation(spec: str, *, kernels_dir: Path | str | None = None) -> Degradation:
    """Parse ``--degrade SPEC`` (see `_FORMS`); bad specs raise `UsageError`.

    ``kernels_dir`` holds ``kernel_1.npy`` .. ``kernel_8.npy`` for ``blur:levin``
    (default: `default_kernels_dir`). Kernel files are read here, so mistakes show up
    before any image is processed.
    """
    text = spec.strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind == "noise":
        if not rest:
            raise UsageError(f"invalid --degrade {spec!r}: noise needs a sigma; {_FORMS}")
        sigma = _number(rest, spec, "sigma")
        if not 0 < sigma <= 255:
            raise UsageError(f"invalid --degrade {spec!r}: sigma must be in (0, 255]; {_FORMS}")
        return NoiseDegradation(sigma)
    if kind == "blur":
        m = re.fullmatch(r"(.*?)(?::noise=([^:]*))?", rest)
        target, noise_text = (m.group(1), m.group(2)) if m else (rest, None)
        noise = DEFAULT_BLUR_NOISE if noise_text is None else _number(noise_text, spec, "noise")
        if not 0 <= noise <= 255:
            raise UsageError(f"invalid --degrade {spec!r}: noise must be in [0, 255]; {_FORMS}")
        levin = re.fullmatch(r"levin(?::(\d+))?", target, re.IGNORECASE)
        if levin:
            folder = Path(kernels_dir) if kernels_dir is not None else default_kernels_dir()
            if levin.group(1) is not None:
                index = int(levin.group(1))
                if not 1 <= index <= 8:
                    raise UsageError(
                        f"invalid --degrade {spec!r}: Levin09 kernels are numbered 1 to 8; {_FORMS}"
                    )
                indices = [index]
            else:
                indices = list(range(1, 9))
            paths = [folder / f"kernel_{i}.npy" for i in indices]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise UsageError(
                    f"invalid --degrade {spec!r}: Levin09 kernel {missing[0]} "
                    "not found; give the kernel file's path instead "
                    f"(blur:PATH.npy); {_FORMS}"
                )
            name = "levin" + (f":{indices[0]}" if len(indices) == 1 else "")
            return BlurDegradation(tuple(_load_kernel(p, spec) for p in paths), name, noise)
        if target.lower().endswith(".npy"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise UsageError(
                    f"invalid --degrade {spec!r}: kernel file {path} not found; {_FORMS}"
                )
            return BlurDegradation((_load_kernel(path, spec),), str(path), noise)
        raise UsageError(f"invalid --degrade {spec!r}: unknown blur {target!r}; {_FORMS}")
    if kind == "rain":
        base_seed, preset = 0, "mixed"
        for part in rest.split(":") if rest else []:
            if re.fullmatch(r"-?\d+", part):
                base_seed = int(part)
            elif part.lower() in RAIN_PRESETS:
                preset = part.lower()
            else:
                raise UsageError(
                    f"invalid --degrade {spec!r}: {part!r} is neither a seed "
                    f"nor light/heavy/mixed; {_FORMS}"
                )
        return RainDegradation(base_seed, preset, RAIN_PRESETS[preset])
    raise UsageError(f"invalid --degrade {spec!r}: unknown kind {kind!r}; {_FORMS}")
