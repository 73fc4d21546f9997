"""Encode the restored result as the same kind of file the user gave us.

* Format: `formats.resolve_format` turns `same` into a concrete format. An explicit format
  that cannot hold the result is a deliberate user choice and wins. What each format holds
  is its `FormatSpec` (`formats.py`), read by `_plan`: JPEG/WebP reduce 16 bits to 8; JPEG
  flattens alpha onto white (what a viewer shows on a white page), WebP keeps 8-bit alpha
  (16-bit alpha is rounded to 8 bits); WebP stores gray as RGB; 16-bit gray+alpha TIFF is
  written as 16-bit RGBA (Pillow and OpenCV cannot read that TIFF layout back).
  `output_notes` lists these changes so the CLI can warn.
* JPEG: `quality` (default 95), 4:4:4 chroma at quality >= 90, else 4:2:0. WebP: same
  quality; a lossless WebP source is written lossless. PNG: lossless, Pillow's defaults.
  TIFF: Deflate with horizontal predictor (lossless, read by every libtiff-based program).
* Metadata (ICC, EXIF, DPI) is written as `metadata.py` describes.
* Pillow cannot write 16-bit colour at all, and its compressed TIFF writer fails when given
  EXIF. So 16-bit RGB(A) PNG pixels are compressed by OpenCV (gray+alpha, which OpenCV cannot
  write, by a numpy Paeth filter here) with our iCCP/pHYs/eXIf chunks added, and all TIFF
  output comes from a small writer on top of Pillow's IFD serializer. The rest is Pillow.
  Libraries were tried for both (issue 15); why ours stays is said at each writer.
* `write_image` encodes fully in memory, then writes atomically (`atomic.py`).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, TiffImagePlugin, TiffTags

from mprnet_cli.errors import OutputError, OutputExistsError, UsageError
from mprnet_cli.imageio.atomic import write_atomic
from mprnet_cli.imageio.formats import (
    FORMATS,
    FormatSpec,
    OutputFormat,
    encoder_of,
    or_list,
    resolve_format,
)
from mprnet_cli.imageio.metadata import EXIF_HEADER, exif_into_ifd, icc_space
from mprnet_cli.imageio.pixels import FloatArray, ImageInfo, UIntArray, to_uint8, to_uint16
from mprnet_cli.settings import DEFAULT_JPEG_QUALITY as DEFAULT_JPEG_QUALITY

#: At and above this quality JPEGs keep full chroma resolution (4:4:4).
_FULL_CHROMA_QUALITY: Final = 90


@dataclass(frozen=True)
class _Plan:
    """What a given format will actually receive, decided once for encoder and notes."""

    fmt: OutputFormat
    depth: int
    gray: bool
    alpha: bool
    flatten: bool
    icc: bytes | None
    exif: bytes | None
    dpi: tuple[float, float] | None
    notes: tuple[str, ...]


def _plan(info: ImageInfo, fmt: OutputFormat, has_alpha: bool) -> _Plan:
    fmt = resolve_format(fmt, info)
    return _plan_for(info, fmt, fmt.spec, has_alpha)


def _plan_for(info: ImageInfo, fmt: OutputFormat, spec: FormatSpec, has_alpha: bool) -> _Plan:
    """What `spec` can hold of this image, and a note for each thing it cannot."""
    notes: list[str] = []
    depth = min(info.bit_depth, max(spec.depths))
    if depth < info.bit_depth:
        notes.append(
            f"{spec.name} holds only {depth} bits per channel: "
            f"{info.bit_depth}-bit depth reduced to {depth}"
        )
    gray = info.grayscale and spec.gray
    if info.grayscale and not gray:
        notes.append(f"{spec.name} has no grayscale: written as RGB with equal channels")
    elif gray and has_alpha and spec.alpha and depth not in spec.gray_alpha_depths:
        # e.g. 16-bit gray+alpha TIFF: valid, but neither Pillow nor OpenCV reads it back.
        gray = False
        notes.append(
            f"{depth}-bit gray+alpha {spec.name} is written as RGBA (few programs read the former)"
        )
    flatten = has_alpha and not spec.alpha
    if flatten:
        notes.append(f"{spec.name} has no transparency: alpha flattened onto white")
    icc = info.icc_profile
    if icc is not None and not spec.icc:
        notes.append(f"{spec.name} cannot embed an ICC profile: it was dropped")
        icc = None
    elif icc is not None and icc_space(icc) != (b"GRAY" if gray else b"RGB "):
        notes.append("the ICC profile does not match the written colour model and was dropped")
        icc = None
    exif = info.exif
    if exif is not None and not spec.exif:
        notes.append(f"{spec.name} cannot embed EXIF: it was dropped")
        exif = None
    elif exif is not None and spec.max_exif is not None and len(exif) > spec.max_exif:
        notes.append(
            f"the EXIF block is too large for {spec.name} "
            f"({round(spec.max_exif / 1024)} KB) and was dropped"
        )
        exif = None
    dpi = info.dpi if spec.dpi else None  # no DPI field: not worth a note
    return _Plan(fmt, depth, gray, has_alpha and not flatten, flatten, icc, exif, dpi, tuple(notes))


def output_notes(
    info: ImageInfo, fmt: OutputFormat, *, has_alpha: bool | None = None
) -> tuple[str, ...]:
    """What writing `info`'s image as `fmt` loses (empty when nothing): for CLI warnings."""
    return _plan(info, fmt, info.has_alpha if has_alpha is None else has_alpha).notes


@dataclass(frozen=True)
class OutputPixels:
    """A restored image quantised exactly as it will be stored: (H, W, C) uint8/uint16 with
    gray, alpha and flattening applied. Compact (it is what a runner ships between stages);
    `encode_pixels` only compresses it."""

    pixels: npt.NDArray[Any]
    plan: _Plan
    lossless: bool

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


def prepare_pixels(
    rgb: FloatArray, info: ImageInfo, fmt: OutputFormat, *, alpha: UIntArray | None = None
) -> OutputPixels:
    """Restored float RGB (H, W, 3) -> the integer pixels `fmt` will store."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"rgb must be a float (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if alpha is not None and (alpha.shape != (h, w) or alpha.dtype not in (np.uint8, np.uint16)):
        raise ValueError(f"alpha must be uint8/uint16 {(h, w)}, got {alpha.dtype} {alpha.shape}")
    if w == 0 or h == 0:
        raise ValueError("cannot encode an empty image")
    plan = _plan(info, fmt, alpha is not None)
    if plan.flatten and alpha is not None:
        a = alpha.astype(np.float32) / float(np.iinfo(alpha.dtype).max)
        rgb = np.clip(np.nan_to_num(rgb.astype(np.float32)), 0, 1) * a[..., None] + (
            1.0 - a[..., None]
        )
    quantize = to_uint16 if plan.depth == 16 else to_uint8
    pixels: npt.NDArray[Any] = quantize(rgb.mean(axis=2) if plan.gray else rgb)
    if plan.alpha and alpha is not None:
        a_out = _alpha_at_depth(alpha, plan.depth)
        pixels = np.concatenate([pixels.reshape(h, w, -1), a_out[..., None]], axis=2)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return OutputPixels(pixels, plan, info.lossless)


class Encoder(Protocol):
    """A format's encoder (`FormatSpec.encoder`): prepared pixels -> the complete file."""

    def __call__(self, prepared: OutputPixels, quality: int) -> bytes: ...


def encode_pixels(prepared: OutputPixels, *, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Compress prepared pixels as a complete file; `jpeg_quality` is also WebP's."""
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"quality must be between 1 and 100, got {jpeg_quality}")
    spec = prepared.plan.fmt.spec
    w, h = prepared.size
    if spec.max_side is not None and max(w, h) > spec.max_side:
        unlimited = [f.value for f in FORMATS if f.spec.max_side is None]
        raise OutputError(
            f"{spec.name} cannot store a {w}x{h} image "
            f"(max {spec.max_side} pixels per side); choose --format {or_list(unlimited)}"
        )
    return encoder_of(prepared.plan.fmt)(prepared, jpeg_quality)


def encode_png(prepared: OutputPixels, quality: int) -> bytes:
    """PNG: Pillow, or our writer for the 16-bit colour Pillow cannot write."""
    plan, pixels = prepared.plan, prepared.pixels
    if plan.depth == 16 and pixels.shape[2] > 1:
        return png16_bytes(pixels, icc=plan.icc, exif=plan.exif, dpi=plan.dpi)
    return _pillow_bytes(pixels, plan, {})


def encode_jpeg(prepared: OutputPixels, quality: int) -> bytes:
    """JPEG at `quality`, with 4:4:4 chroma at and above `_FULL_CHROMA_QUALITY`."""
    subsampling = 0 if quality >= _FULL_CHROMA_QUALITY else 2
    return _pillow_bytes(
        prepared.pixels, prepared.plan, {"quality": quality, "subsampling": subsampling}
    )


def encode_webp(prepared: OutputPixels, quality: int) -> bytes:
    """WebP at `quality`; lossless when the source was a lossless WebP."""
    params = {"quality": quality, "lossless": prepared.lossless, "exact": True}
    return _pillow_bytes(prepared.pixels, prepared.plan, params)


def encode_tiff(prepared: OutputPixels, quality: int) -> bytes:
    """TIFF: our Deflate writer (`tiff_bytes`), lossless whatever `quality` says."""
    plan = prepared.plan
    return tiff_bytes(prepared.pixels, icc=plan.icc, exif=plan.exif, dpi=plan.dpi)


def encode_image(
    rgb: FloatArray,
    info: ImageInfo,
    fmt: OutputFormat,
    *,
    alpha: UIntArray | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> bytes:
    """Encode restored float RGB (H, W, 3) as a complete file; `jpeg_quality` is also WebP's."""
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"quality must be between 1 and 100, got {jpeg_quality}")
    prepared = prepare_pixels(rgb, info, fmt, alpha=alpha)
    return encode_pixels(prepared, jpeg_quality=jpeg_quality)


def _alpha_at_depth(alpha: UIntArray, depth: int) -> UIntArray:
    if depth == 16:
        return alpha.astype(np.uint16) * 257 if alpha.dtype == np.uint8 else alpha
    if alpha.dtype == np.uint16:
        return np.rint(alpha / 257.0).astype(np.uint8)
    return alpha


def _pillow_bytes(pixels: npt.NDArray[Any], plan: _Plan, options: dict[str, Any]) -> bytes:
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    params: dict[str, Any] = dict(options)
    if plan.icc is not None:
        params["icc_profile"] = plan.icc
    if plan.exif is not None:
        params["exif"] = plan.exif
    if plan.dpi is not None:
        params["dpi"] = plan.dpi
    out = io.BytesIO()
    image.save(out, plan.fmt.spec.pillow[0], **params)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# Ours: no library writes 16-bit colour PNG with iCCP/eXIf (Pillow: no 16-bit colour; OpenCV
# and pypng 0.20220715: no such chunks), so our chunks go into OpenCV's output.
def png16_bytes(
    pixels: npt.NDArray[Any],
    *,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
) -> bytes:
    """16-bit gray+alpha / RGB / RGBA PNG, which Pillow cannot write.

    RGB(A) pixels are compressed by OpenCV (its zlib is ~3x faster than Python's); OpenCV
    cannot write gray+alpha, so that rare case is filtered and compressed here. Our metadata
    chunks go right after IHDR, which is always the first chunk (bytes 8..33).
    """
    h, w, c = pixels.shape
    meta = []
    if icc is not None:
        meta.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if dpi is not None:
        ppm = [round(d / 0.0254) for d in dpi]
        meta.append(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif is not None:
        meta.append(_png_chunk(b"eXIf", exif.removeprefix(EXIF_HEADER)))
    if c in (3, 4):
        import cv2

        bgr = pixels[..., [2, 1, 0, 3][:c]]
        ok, buf = cv2.imencode(OutputFormat.PNG.spec.extension, np.ascontiguousarray(bgr))
        if not ok:
            raise OSError(f"OpenCV could not encode the {OutputFormat.PNG.spec.name}")
        encoded = buf.tobytes()
        return encoded[:33] + b"".join(meta) + encoded[33:]
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4}[c], 0, 0, 0)
    idat = png_paeth_zlib(pixels)
    step = 1 << 20
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header), *meta]
        + [_png_chunk(b"IDAT", idat[i : i + step]) for i in range(0, len(idat), step)]
        + [_png_chunk(b"IEND", b"")]
    )


# Ours, not pypng: it would replace only these 30 lines (the chunks stay ours): not worth a dependency.
def png_paeth_zlib(pixels: npt.NDArray[Any]) -> bytes:
    """PNG IDAT payload of 16-bit (H, W, C) samples, every row Paeth-filtered.

    Encoding Paeth only looks at unfiltered neighbours, so it vectorises over whole blocks.
    """
    h, w, c = pixels.shape
    raw = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    bpp = c * 2
    compressor = zlib.compressobj(6)
    parts = []
    prev = np.zeros(raw.shape[1], dtype=np.int16)
    block = max(1, (4 << 20) // raw.shape[1])
    for top in range(0, h, block):
        rows = raw[top : top + block].astype(np.int16)
        a = np.zeros_like(rows)
        a[:, bpp:] = rows[:, :-bpp]
        b = np.empty_like(rows)
        b[0] = prev
        b[1:] = rows[:-1]
        cc = np.zeros_like(rows)
        cc[:, bpp:] = b[:, :-bpp]
        pa, pb, pc = np.abs(b - cc), np.abs(a - cc), np.abs(a + b - 2 * cc)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
        out = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
        out[:, 0] = 4  # Paeth
        out[:, 1:] = (rows - pred) & 0xFF
        parts.append(compressor.compress(out.tobytes()))
        prev = rows[-1]
    parts.append(compressor.flush())
    return b"".join(parts)


# Ours, not tifffile: tifffile 2026.3.3 refuses the EXIF/GPS sub-IFD pointers (34665/34853).
def tiff_bytes(
    pixels: npt.NDArray[Any],
    *,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
) -> bytes:
    """TIFF (gray/RGB, +alpha, 8/16-bit), Deflate + horizontal predictor, with metadata.

    Pillow's IFD serializer writes the tags (including the EXIF and GPS sub-IFDs); strips are
    compressed here because Pillow cannot write 16-bit colour and its compressed (libtiff)
    writer rejects EXIF sub-IFDs.
    """
    h, w, c = pixels.shape
    bits = pixels.dtype.itemsize * 8
    rows_per_strip = max(1, min(h, (256 << 10) // (w * c * pixels.dtype.itemsize)))

    def compress_strip(top: int) -> bytes:
        block = pixels[top : top + rows_per_strip]
        diff = block.copy()
        diff[:, 1:] -= block[:, :-1]  # predictor 2: unsigned wrap-around is what readers expect
        return zlib.compress(diff.astype("<u2" if bits == 16 else np.uint8).tobytes(), 6)

    tops = range(0, h, rows_per_strip)
    if len(tops) == 1:
        strips = [compress_strip(0)]
    else:  # zlib releases the GIL and strips are independent: use the cores
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            strips = list(pool.map(compress_strip, tops))
    offsets = np.cumsum([0] + [len(s) for s in strips[:-1]]).tolist()

    def header(with_exif: bool) -> bytes:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        if with_exif and exif is not None:
            exif_into_ifd(exif, ifd)  # first, so that the layout tags below win
        ifd[256] = w
        ifd[257] = h
        ifd[258] = (bits,) * c
        ifd[259] = 8  # Adobe Deflate
        ifd[262] = 1 if c in (1, 2) else 2
        ifd[273] = tuple(offsets)  # relative: Pillow's serializer adds where the data starts
        ifd.tagtype[273] = TiffTags.LONG
        ifd[277] = c
        ifd[278] = rows_per_strip
        ifd[279] = tuple(len(s) for s in strips)
        ifd.tagtype[279] = TiffTags.LONG
        ifd[284] = 1
        ifd[317] = 2
        if c in (2, 4):
            ifd[338] = (2,)  # unassociated alpha
        ifd[339] = (1,) * c
        if dpi is not None:
            ifd[282], ifd[283], ifd[296] = dpi[0], dpi[1], 2
        if icc is not None:
            ifd[34675] = icc
        out = io.BytesIO()
        ifd.save(out)
        return out.getvalue()

    try:
        head = header(with_exif=True)
    except (ValueError, TypeError, struct.error):  # an EXIF value Pillow cannot serialise
        head = header(with_exif=False)
    return head + b"".join(strips)


def write_image(
    path: str | os.PathLike[str],
    rgb: FloatArray,
    info: ImageInfo,
    fmt: OutputFormat,
    *,
    alpha: UIntArray | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    overwrite: bool = False,
) -> None:
    """Encode and write atomically: the final name holds the complete file or nothing new."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name for the output")
    if not overwrite and target.exists():
        raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")
    write_pixels(
        target, prepare_pixels(rgb, info, fmt, alpha=alpha), jpeg_quality, overwrite=overwrite
    )


def write_pixels(
    path: str | os.PathLike[str],
    prepared: OutputPixels,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    *,
    overwrite: bool = False,
) -> None:
    """Compress and write atomically: the final name holds the complete file or nothing new."""
    target = Path(path)
    _check_target(target, overwrite=overwrite)
    write_file(target, encode_pixels(prepared, jpeg_quality=jpeg_quality), overwrite=overwrite)


def _check_target(target: Path, *, overwrite: bool) -> None:
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name for the output")
    if not overwrite and target.exists():
        raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")


def write_file(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> None:
    """Write an encoded image atomically (`OutputExistsError` if it exists, unless `overwrite`)."""
    target = Path(path)
    _check_target(target, overwrite=overwrite)
    write_atomic(target, data, overwrite=overwrite)
