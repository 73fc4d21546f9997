"""The decoded image and its integer <-> float conversions.

The network only sees float32 RGB in [0, 1]; everything else is carried in `ImageInfo` and
restored by the writer (`encode.py`).

* Quantisation: round(clip(x, 0, 1) * 255) or * 65535 (NaN -> 0), as in the reference demo.
* Grayscale goes to the network as three equal channels. The writer turns RGB back into gray
  with the channel *mean*, not ITU-R 601 luma: the input had no colour, so the three output
  channels are three estimates of one gray value and any chroma is network error; the mean
  weighs them equally, which is what minimises the remaining noise (variance 1/3 of one
  channel versus 0.45 for 601 weights) and is exact when the channels are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
UIntArray = npt.NDArray[np.unsignedinteger[Any]]


@dataclass(frozen=True)
class ImageInfo:
    """Everything the writer needs to reproduce the kind of file that was read."""

    format: str | None  # Pillow's name ("JPEG", "PNG", "TIFF", ...); MPO reads as "JPEG"
    mode: str  # source mode: Pillow's, or "RGB;16", "RGBA;16", "LA;16" for OpenCV-read files
    bit_depth: int  # 8 or 16: what PNG/TIFF output is written with
    grayscale: bool
    has_alpha: bool
    icc_profile: bytes | None
    exif: bytes | None  # ready to write: b"Exif\0\0" + TIFF block, Orientation already 1
    dpi: tuple[float, float] | None
    frame_count: int = 1  # frames/pages in the source; only the first is decoded
    lossless: bool = False  # the source used lossless WebP
    notes: tuple[str, ...] = ()  # things the user should be told about the decode


@dataclass(frozen=True)
class DecodedImage:
    """Upright pixels for the network plus what is needed to write them back."""

    rgb: npt.NDArray[np.float32]  # (H, W, 3) in [0, 1]
    alpha: UIntArray | None  # (H, W) uint8 or uint16, untouched
    info: ImageInfo

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def in_uint16_range(values: npt.NDArray[Any]) -> bool:
    """Integer pixels that 16 bits can hold (Pillow's mode I is 32-bit signed)."""
    return not values.size or bool(values.min() >= 0 and values.max() <= 65535)


def in_unit_range(values: npt.NDArray[Any]) -> bool:
    """Finite float pixels in [0, 1] (not HDR, not NaN)."""
    return not values.size or bool(
        np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    )


def to_uint8(rgb: FloatArray) -> npt.NDArray[np.uint8]:
    """round(clip(x, 0, 1) * 255), NaN -> 0: the reference demo's rounding."""
    return _quantize(rgb, 255).astype(np.uint8)


def to_uint16(rgb: FloatArray) -> npt.NDArray[np.uint16]:
    """round(clip(x, 0, 1) * 65535), NaN -> 0."""
    return _quantize(rgb, 65535).astype(np.uint16)


def unit_rgb(color: npt.NDArray[Any], bit_depth: int) -> npt.NDArray[np.float32]:
    """Integer pixels ((H, W) gray or (H, W, 3)) -> the network's (H, W, 3) float32 in [0, 1].

    The one formula every decode uses, so a runner that ships the compact integers
    (`to_uint8`/`to_uint16` of `DecodedImage.rgb` recover them exactly) and rebuilds the
    floats elsewhere gets bit-identical network input.
    """
    h, w = color.shape[:2]
    scale = 65535.0 if bit_depth == 16 else 255.0
    rgb = np.empty((h, w, 3), dtype=np.float32)
    if color.ndim == 2:
        np.divide(color, scale, out=rgb[..., 0], dtype=np.float32)
        rgb[..., 1] = rgb[..., 0]
        rgb[..., 2] = rgb[..., 0]
    else:
        np.divide(color, scale, out=rgb, dtype=np.float32)
    return rgb


def _quantize(x: FloatArray, scale: int) -> npt.NDArray[np.float32]:
    y = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(y, 0.0, 1.0, out=y)
    y *= scale
    np.rint(y, out=y)
    return y
