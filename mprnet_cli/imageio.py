"""Decode images for the network and encode the restored result as the same kind of file.

Photographers expect the output to be the input, only cleaner: same format, bit depth,
grayscale-ness, alpha, orientation, ICC profile, EXIF and DPI. The network only sees
float32 RGB in [0, 1]; everything else is carried in `ImageInfo` and restored by the writer.
No torch here: this layer is used by `mprnet --help`-fast code paths and by tests.

Decoding (`read_image`)
-----------------------
* Sources: a path or the raw bytes of a file (stdin). Anything Pillow can open, except EPS
  (Pillow would run Ghostscript on untrusted input).
* Orientation: EXIF orientation is applied with `ImageOps.exif_transpose` semantics, so
  `rgb` and `alpha` are upright. DPI is swapped for 90-degree orientations.
* Size: images above `max_pixels` (default `DEFAULT_MAX_PIXELS`, 16384 x 16384 ~ 268 MP: a
  150 MP medium-format frame fits, and its float32 RGB copy alone is already ~3.2 GB) raise
  `InputError` before any pixel is decoded. `max_pixels=None` lifts the limit. Pillow's own
  bomb check is a process-wide global; it is switched off while we decode, because ours
  replaces it, under a module lock (so decodes in threads are serialised).
* Broken input (missing, empty, truncated, not an image, unsupported mode) raises
  `InputError` naming the file, never a raw Pillow/OpenCV exception. A PNG whose zlib
  stream is complete but holds fewer rows than its header declares counts as truncated
  (Pillow would fill the rest with black): `_png_rows_complete` inflates it once to check. Warnings Pillow emits
  while decoding (e.g. "Corrupt EXIF data") become `ImageInfo.notes`, not stderr noise. Only
  the decoding thread's warnings are taken: those other threads raise meanwhile (torch on the
  main thread of a batch) keep their filters and handlers (`_warnings_as_notes`).
* Animated / multi-page files (GIF, APNG, WebP, multi-page TIFF): only the first frame is
  decoded; `ImageInfo.frame_count` and `ImageInfo.notes` say so, so the CLI can tell the user.
  An MPO (a camera JPEG with embedded previews) counts as one still JPEG.
* 16 bits: Pillow has no 16-bit RGB mode and silently reduces 16-bit RGB(A) / gray+alpha PNG
  and TIFF (and 16-bit PPM) to 8 bits. Those files are decoded with OpenCV
  (`cv2.imdecode(..., IMREAD_UNCHANGED)`); Pillow still provides the metadata. OpenCV is
  handed a copy without orientation (it rotates TIFFs but not PNGs) and we apply it once.

Mode conversions (source -> network input -> what the writer produces):

=============================  ===========================================================
Source                          Result
=============================  ===========================================================
RGB, RGBX, YCbCr, HSV, LAB      RGB 8-bit
RGBA, RGBa, PA                  RGB 8-bit + 8-bit alpha (RGBa is un-premultiplied)
P (palette)                     RGB 8-bit, or RGB + alpha if the palette has transparency
L, 1 (bilevel)                  gray 8-bit (1-bit becomes 0/255: no 1-bit writer wanted)
LA, La                          gray 8-bit + 8-bit alpha
L / RGB with a tRNS colour key  gray/RGB + 8-bit alpha (the key becomes real transparency)
I;16, I;16B, I;16L, ...         gray 16-bit
I, I;32, signed ints            gray 16-bit if every value is in 0..65535 (16-bit PGM, old
                                Pillow 16-bit PNG); otherwise `InputError`
F (32-bit float)                gray 16-bit if every value is in [0, 1]; otherwise
                                `InputError` (no silent clipping of HDR/scientific data)
CMYK                            RGB 8-bit; through the embedded CMYK ICC profile to sRGB
                                (sRGB profile written) when there is one, else Pillow's
                                naive conversion. Output is RGB: CMYK is a print format.
16-bit RGB / RGBA / gray+alpha  same, 16-bit (via OpenCV)
=============================  ===========================================================

Grayscale goes to the network as three equal channels. The writer turns RGB back into gray
with the channel *mean*, not ITU-R 601 luma: the input had no colour, so the three output
channels are three estimates of one gray value and any chroma is network error; the mean
weighs them equally, which is what minimises the remaining noise (variance 1/3 of one channel
versus 0.45 for 601 weights) and is exact when the channels are equal.

Encoding (`encode_image`, `write_image`)
---------------------------------------
* Quantisation: round(clip(x, 0, 1) * 255) or * 65535 (NaN -> 0), as in the reference demo.
* `OutputFormat.SAME` (`resolve_format`): JPEG (and MPO) -> JPEG, PNG -> PNG, WebP -> WebP,
  TIFF -> TIFF, when that format can hold the result (JPEG: 8-bit, no alpha - always true for
  a JPEG input; WebP: 8-bit colour - always true for a WebP input); every other format (BMP,
  GIF, PPM, ICO, JPEG 2000, AVIF, ...) -> PNG, which is lossless and holds every depth, gray,
  alpha and metadata combination we produce.
* An explicit format that cannot hold the result is a deliberate user choice and wins:
  JPEG/WebP reduce 16 bits to 8; JPEG flattens alpha onto white (what a viewer shows on a
  white page), WebP keeps 8-bit alpha (16-bit alpha is rounded to 8 bits); WebP stores gray
  as RGB; 16-bit gray+alpha TIFF is written as 16-bit RGBA (Pillow and OpenCV cannot read
  that TIFF layout back). `output_notes` lists these changes so the CLI can warn.
* JPEG: `quality` (default 95), 4:4:4 chroma at quality >= 90, else 4:2:0. WebP: same
  quality; a lossless WebP source is written lossless. PNG: lossless, Pillow's defaults.
  TIFF: Deflate with horizontal predictor (lossless, read by every libtiff-based program).
* Metadata: the ICC profile is copied when its colour space matches the written pixels (RGB
  profile for colour, GRAY for gray); EXIF is copied with Orientation set to 1, the thumbnail
  IFD dropped (it still shows the unrestored, un-rotated image) and PixelX/YDimension set to
  the upright size. Otherwise the block is kept byte for byte, so maker notes survive
  (JPEG/PNG/WebP to JPEG/PNG/WebP; TIFF keeps EXIF as tags, so those paths re-serialise it).
  JPEG, PNG, WebP and TIFF hold ICC and EXIF; DPI is written to JPEG, PNG and TIFF (WebP has
  no DPI field).
* Pillow cannot write 16-bit colour at all, and its compressed TIFF writer fails when given
  EXIF. So 16-bit RGB(A) PNG pixels are compressed by OpenCV (gray+alpha, which OpenCV cannot
  write, by a numpy Paeth filter here) with our iCCP/pHYs/eXIf chunks added, and all TIFF
  output comes from a small writer on top of Pillow's IFD serializer. The rest is Pillow.
* `write_image` is atomic: encode fully in memory, write a hidden `.<name>.<random>.tmp` in the
  target folder, fsync, then link/replace it into place. On any failure, KeyboardInterrupt
  included, the temporary file is removed and no partial output exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import math
import os
import re
import secrets
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms, ImageOps, TiffImagePlugin, TiffTags, UnidentifiedImageError

from mprnet_cli.choices import OutputFormat
from mprnet_cli.errors import (
    InputError,
    OutputError,
    OutputExistsError,
    UsageError,
    describe_os_error,
)

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "DecodedImage",
    "ImageInfo",
    "OutputFormat",
    "encode_image",
    "extension_for",
    "format_from_suffix",
    "list_images",
    "output_notes",
    "read_image",
    "resolve_format",
    "temp_target",
    "to_uint8",
    "to_uint16",
    "unit_rgb",
    "write_bytes_atomic",
    "write_image",
]

#: Largest accepted image: 16384 x 16384 pixels (see the module docstring for why).
DEFAULT_MAX_PIXELS: Final = 16384 * 16384
DEFAULT_JPEG_QUALITY: Final = 95
#: At and above this quality JPEGs keep full chroma resolution (4:4:4).
_FULL_CHROMA_QUALITY: Final = 90
_JPEG_MAX_SIDE: Final = 65500  # libjpeg's JPEG_MAX_DIMENSION
_WEBP_MAX_SIDE: Final = 16383
_JPEG_MAX_EXIF: Final = 65533  # an APP1 segment payload
_STDIN_NAME: Final = "<stdin>"

#: What a folder or glob contributes: every still/first-frame format Pillow decodes well.
_EXTENSION_WORDS: Final = (
    ".jpg .jpeg .jpe .jfif .png .apng .webp .tif .tiff .bmp .dib .gif .ppm .pgm .pbm .pnm "
    ".tga .jp2 .j2k .jpf .jpx .avif .qoi .pcx .sgi .ico"
)
IMAGE_EXTENSIONS: Final = frozenset(_EXTENSION_WORDS.split())

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


# --------------------------------------------------------------------------- quantisation


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


# --------------------------------------------------------------------------- formats


_FORMAT_OF_PILLOW: Final = {
    "JPEG": OutputFormat.JPEG,
    "PNG": OutputFormat.PNG,
    "WEBP": OutputFormat.WEBP,
    "TIFF": OutputFormat.TIFF,
}
_EXTENSIONS: Final = {
    OutputFormat.PNG: ".png",
    OutputFormat.JPEG: ".jpg",
    OutputFormat.WEBP: ".webp",
    OutputFormat.TIFF: ".tif",
}
_NICE_NAMES: Final = {
    OutputFormat.SAME: "same",
    OutputFormat.PNG: "PNG",
    OutputFormat.JPEG: "JPEG",
    OutputFormat.WEBP: "WebP",
    OutputFormat.TIFF: "TIFF",
}
_SUFFIXES: Final = {
    ".png": OutputFormat.PNG,
    ".jpg": OutputFormat.JPEG,
    ".jpeg": OutputFormat.JPEG,
    ".jpe": OutputFormat.JPEG,
    ".jfif": OutputFormat.JPEG,
    ".webp": OutputFormat.WEBP,
    ".tif": OutputFormat.TIFF,
    ".tiff": OutputFormat.TIFF,
}


def resolve_format(requested: OutputFormat, info: ImageInfo) -> OutputFormat:
    """The concrete format to write; SAME follows the rule in the module docstring."""
    requested = OutputFormat(requested)
    if requested is not OutputFormat.SAME:
        return requested
    fmt = _FORMAT_OF_PILLOW.get(info.format or "")
    if fmt is None or not _can_hold(fmt, info):
        return OutputFormat.PNG
    return fmt


def _can_hold(fmt: OutputFormat, info: ImageInfo) -> bool:
    if fmt is OutputFormat.JPEG:
        return info.bit_depth == 8 and not info.has_alpha
    if fmt is OutputFormat.WEBP:
        return info.bit_depth == 8 and not info.grayscale
    return True


def extension_for(fmt: OutputFormat) -> str:
    """File suffix for a concrete format ('.tif' like Lightroom/Photoshop exports)."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.SAME:
        raise ValueError("resolve OutputFormat.SAME with resolve_format() first")
    return _EXTENSIONS[fmt]


def format_from_suffix(path: str | os.PathLike[str]) -> OutputFormat | None:
    """The format a file name asks for (case-insensitive), or None if we cannot write it."""
    return _SUFFIXES.get(Path(path).suffix.lower())


# --------------------------------------------------------------------------- decoding

_PILLOW_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_bomb_check_off() -> Iterator[None]:
    """Pillow's limit is a process global; our `max_pixels` check replaces it while we decode."""
    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _open_formats() -> list[str]:
    Image.init()
    return [f for f in Image.OPEN if f != "EPS"]


# Exceptions Pillow and its plugins raise on malformed data (IndexError, TypeError and
# struct.error come from header parsers).
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def read_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> DecodedImage:
    """Decode a file (path) or file contents (bytes, e.g. stdin) into upright float32 RGB.

    `name` labels the source in error messages (default: the path, or "<stdin>" for bytes).
    """
    if isinstance(source, bytes):
        label = name or _STDIN_NAME
        if not source:
            raise InputError(f"{label}: input is empty; expected an image file")
        return _read_stream(io.BytesIO(source), label, max_pixels)
    label = name or os.fspath(source)
    try:
        with Path(source).open("rb") as fp:
            if os.fstat(fp.fileno()).st_size == 0:
                raise InputError(f"{label}: file is empty; expected an image file")
            return _read_stream(fp, label, max_pixels)
    except FileNotFoundError:
        raise InputError(f"{label}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a folder, not an image file") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied; check the file's permissions") from None
    except OSError as exc:  # I/O errors while reading the file itself
        raise InputError(f"{label}: cannot read ({_one_line(exc)})") from None


# Warnings are process-global state and `warnings.catch_warnings` is not thread-safe: used
# on the decode thread it would swallow (or pin on the wrong image) what the main thread
# warns meanwhile. So while any decode runs, `warnings.warn` and `warnings.showwarning` are
# wrapped (installed and removed under a lock, counted) by hooks that keep the warnings of
# the decoding threads and pass every other thread's on unchanged.
_WARN_LOCK = threading.Lock()
_warn_users = 0
_capturing: dict[int, list[str]] = {}  # thread ident -> what it warned while decoding
_saved_warn: Callable[..., None] = warnings.warn
_saved_showwarning: Callable[..., None] = warnings.showwarning


def _warn_hook(
    message: Warning | str,
    category: type[Warning] | None = None,
    stacklevel: int = 1,
    source: Any = None,
    **kwargs: Any,
) -> None:
    """`warnings.warn` during decodes: a decoding thread's warning is a note whatever the filters
    (even `-W error`, and repeats are kept); other threads get the real `warn`."""
    sink = _capturing.get(threading.get_ident())
    if sink is not None:
        sink.append(str(message))
        return
    _saved_warn(message, category, stacklevel + 1, source, **kwargs)  # +1: skip this frame


def _showwarning_hook(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning` during decodes: catches what bypasses `warnings.warn` (C code)."""
    sink = _capturing.get(threading.get_ident())
    if sink is not None:
        sink.append(str(message))
        return
    _saved_showwarning(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def _warnings_as_notes() -> Iterator[list[str]]:
    """Collect the warnings raised on this thread meanwhile; other threads are unaffected."""
    global _warn_users, _saved_warn, _saved_showwarning
    ident = threading.get_ident()
    sink: list[str] = []
    with _WARN_LOCK:
        if _warn_users == 0:
            # Someone may have put a different function in place since last time (or kept
            # our hook: `catch_warnings` restores what it saw); only wrap what is not ours.
            if warnings.warn is not _warn_hook:
                _saved_warn = warnings.warn
                warnings.warn = _warn_hook
            if warnings.showwarning is not _showwarning_hook:
                _saved_showwarning = warnings.showwarning
                warnings.showwarning = _showwarning_hook
        _warn_users += 1
        outer = _capturing.get(ident)
        _capturing[ident] = sink
    try:
        yield sink
    finally:
        with _WARN_LOCK:
            if outer is None:
                del _capturing[ident]
            else:
                _capturing[ident] = outer
            _warn_users -= 1
            if _warn_users == 0:
                # A hook left behind (replaced by someone since) only forwards: harmless.
                if warnings.warn is _warn_hook:
                    warnings.warn = _saved_warn
                if warnings.showwarning is _showwarning_hook:
                    warnings.showwarning = _saved_showwarning


_EXIF_MALFORMED: Final = "the EXIF data is malformed and was not copied"


def _read_stream(fp: IO[bytes], label: str, max_pixels: int | None) -> DecodedImage:
    # Pillow warns (e.g. "Corrupt EXIF data") instead of raising: that is for the user, via
    # `notes`, not a Python warning on stderr.
    with _pillow_bomb_check_off(), _warnings_as_notes() as caught:
        decoded = _open_and_decode(fp, label, max_pixels)
    if _EXIF_MALFORMED in decoded.info.notes:  # one warning per problem: ours says more
        caught = [text for text in caught if not text.startswith("Corrupt EXIF data")]
    extra = [f"{label}: {' '.join(text.split())}" for text in caught if text.strip()]
    if not extra:
        return decoded
    notes = tuple(dict.fromkeys([*decoded.info.notes, *extra]))
    return dataclasses.replace(decoded, info=dataclasses.replace(decoded.info, notes=notes))


def _open_and_decode(fp: IO[bytes], label: str, max_pixels: int | None) -> DecodedImage:
    try:
        im = Image.open(fp, formats=_open_formats())
    except UnidentifiedImageError:
        if _peek(fp, 4) in (b"II*\x00", b"MM\x00*"):
            raise InputError(
                f"{label}: a TIFF layout Pillow cannot read (e.g. 16-bit gray+alpha); "
                "convert it to PNG or RGB(A) TIFF first"
            ) from None
        raise InputError(f"{label}: not an image file, or a format Pillow cannot read") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{label}: corrupt image header ({_one_line(exc)})") from None
    with im:
        width, height = im.size
        if max_pixels is not None and width * height > max_pixels:
            raise InputError(
                f"{label}: {width}x{height} is {_pixel_count(width * height)}, above the "
                f"limit of {_pixel_count(max_pixels)}; raise --max-pixels if you trust this file"
            )
        try:
            return _decode(im, fp, label)
        except MemoryError:
            raise InputError(
                f"{label}: not enough memory to decode {width}x{height} pixels"
            ) from None
        except _DECODE_ERRORS as exc:
            raise InputError(
                f"{label}: truncated or corrupt image ({_one_line(exc)}); "
                "re-export or re-download it"
            ) from None


def _pixel_count(n: int) -> str:
    """Megapixels where that reads well, exact pixels where rounding would say "0 MP"."""
    return f"{n / 1e6:.1f} MP" if n >= 100_000 else f"{n:,} pixels"


@dataclass
class _Pixels:
    """Intermediate result of a decoder path: integer pixels, upright."""

    color: npt.NDArray[Any]  # (H, W) gray or (H, W, 3) RGB, uint8/uint16
    alpha: UIntArray | None
    bit_depth: int
    mode: str


def _decode(im: Image.Image, fp: IO[bytes], label: str) -> DecodedImage:
    if im.format == "PNG" and not _png_rows_complete(fp):
        # Pillow fills the rows missing from a complete-but-short zlib stream with black
        # and OpenCV fails noisily on stderr: refuse the file before either decodes it
        # (Pillow's PNG getexif() already does).
        raise InputError(
            f"{label}: truncated PNG (its image data ends before the last row); "
            "re-export or re-download it"
        )
    fmt = "JPEG" if im.format == "MPO" else im.format
    notes: list[str] = []
    frames = 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        notes.append(f"{label} has {frames} frames/pages; only the first is restored")

    # Orientation is read before load(): Pillow's TIFF loader applies and deletes it.
    exif_obj = im.getexif()
    orientation = _orientation(exif_obj.get(0x0112))
    raw_exif = im.info.get("exif")

    icc = im.info.get("icc_profile") or None
    deep = _deep_color_kind(im, fp)
    if deep is not None:
        px = _decode_deep(fp, deep, orientation, label)
    else:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # no-op for TIFF (already applied)
        if im.mode == "CMYK":
            cmyk_rgb, icc, note = _cmyk_to_rgb(im)
            notes.append(note)
            px = _Pixels(cmyk_rgb, None, 8, "CMYK")
        else:
            px = _decode_pillow(im, label, notes)
    transposed = orientation in (5, 6, 7, 8)
    dpi = _dpi(im.info.get("dpi"))
    if isinstance(im, TiffImagePlugin.TiffImageFile) and 282 not in im.tag_v2:
        dpi = None  # Pillow reports (1, 1) for a TIFF without resolution tags
    if dpi is not None and transposed:
        dpi = (dpi[1], dpi[0])

    h, w = px.color.shape[:2]
    exif = _output_exif(raw_exif, exif_obj, orientation, (w, h), notes)

    color = px.color
    rgb = unit_rgb(color, px.bit_depth)
    info = ImageInfo(
        format=fmt,
        mode=px.mode,
        bit_depth=px.bit_depth,
        grayscale=color.ndim == 2,
        has_alpha=px.alpha is not None,
        icc_profile=icc if isinstance(icc, bytes) else None,
        exif=exif,
        dpi=dpi,
        frame_count=frames,
        lossless=fmt == "WEBP" and _webp_is_lossless(fp),
        notes=tuple(notes),
    )
    return DecodedImage(rgb=rgb, alpha=px.alpha, info=info)


def _orientation(value: object) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _dpi(value: object) -> tuple[float, float] | None:
    """Positive finite DPI, snapped to an integer when within PNG's 1 px/m rounding."""
    if not isinstance(value, tuple) or len(value) != 2:
        return None
    try:
        xy = [float(v) for v in value]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not all(math.isfinite(v) and v > 0 for v in xy):
        return None
    snapped = [float(round(v)) if abs(v - round(v)) <= 0.0254 / 2 else v for v in xy]
    return snapped[0], snapped[1]


def _decode_pillow(im: Image.Image, label: str, notes: list[str]) -> _Pixels:
    """Pillow-decoded image (already upright) -> integer gray/RGB + alpha per the table."""
    mode = im.mode
    transparency = "transparency" in im.info
    if mode == "1":
        im = im.convert("L")
    elif mode in ("La", "RGBa", "PA"):
        im = im.convert("LA" if mode == "La" else "RGBA")
    elif mode == "P":
        im = im.convert("RGBA" if transparency else "RGB")
    elif mode == "L" and transparency:
        im = im.convert("LA")
    elif mode == "RGB" and transparency:
        im = im.convert("RGBA")
    elif mode in ("RGBX", "YCbCr", "HSV", "LAB"):
        im = im.convert("RGB")

    if im.mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
        if im.mode == "LA":
            return _Pixels(arr[..., 0].copy(), arr[..., 1].copy(), 8, mode)
        if im.mode == "RGBA":
            return _Pixels(arr[..., :3].copy(), arr[..., 3].copy(), 8, mode)
        return _Pixels(arr, None, 8, mode)
    if im.mode.startswith("I;16") and not im.mode.endswith("S"):
        if transparency:
            notes.append(f"{label}: the 16-bit transparent colour key is not kept")
        return _Pixels(np.asarray(im).astype(np.uint16), None, 16, mode)
    if im.mode.startswith("I"):
        values = np.asarray(im)
        if not in_uint16_range(values):
            raise InputError(
                f"{label}: integer image with values outside 0..65535 "
                f"({values.min()}..{values.max()}); convert it to 16-bit first"
            )
        return _Pixels(values.astype(np.uint16), None, 16, mode)
    if im.mode == "F":
        values = np.asarray(im)
        if not in_unit_range(values):
            raise InputError(
                f"{label}: floating-point image with values outside [0, 1]; "
                "tone-map or normalise it to 0..1 first"
            )
        return _Pixels(to_uint16(values), None, 16, mode)
    try:  # any other mode Pillow can convert
        rgb = np.asarray(im.convert("RGB"))
    except ValueError:
        raise InputError(f"{label}: unsupported colour mode {im.mode}") from None
    return _Pixels(rgb, None, 8, mode)


def _cmyk_to_rgb(im: Image.Image) -> tuple[npt.NDArray[np.uint8], bytes | None, str]:
    """CMYK -> (RGB pixels, profile to write, note): colour-managed to sRGB when possible."""
    icc = im.info.get("icc_profile")
    if isinstance(icc, bytes) and _icc_space(icc) == b"CMYK":
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            out = None
        if out is not None:
            note = "CMYK converted to sRGB with the embedded ICC profile"
            return np.asarray(out), srgb.tobytes(), note
    note = "CMYK converted to RGB without colour management (no usable CMYK ICC profile)"
    return np.asarray(im.convert("RGB")), None, note


def _icc_space(icc: bytes) -> bytes:
    """ICC header colour space signature, e.g. b'RGB ', b'GRAY', b'CMYK'."""
    return icc[16:20] if len(icc) >= 20 else b""


# A 16-bit colour file Pillow would cut to 8 bits: (container, mode, gray, PPM maxval or 0).
_DeepKind = tuple[str, str, bool, int]


def _deep_color_kind(im: Image.Image, fp: IO[bytes]) -> _DeepKind | None:
    """Detect files whose samples are deeper than the 8-bit mode Pillow would give us."""
    fmt = im.format
    if fmt == "PNG":
        head = _peek(fp, 26)
        if len(head) == 26 and head[24] == 16 and head[25] in (2, 4, 6):
            mode = {2: "RGB;16", 4: "LA;16", 6: "RGBA;16"}[head[25]]
            return ("PNG", mode, head[25] == 4, 0)
    elif fmt == "TIFF" and isinstance(im, TiffImagePlugin.TiffImageFile):
        tags = im.tag_v2
        bits = tags.get(258, (1,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        spp = tags.get(277, 1)
        photometric = tags.get(262)
        sample_format = tags.get(339, (1,))
        sample_format = sample_format if isinstance(sample_format, tuple) else (sample_format,)
        modes = {(1, 2): "LA;16", (2, 3): "RGB;16", (2, 4): "RGBA;16"}
        tiff_mode = modes.get((photometric, spp)) if isinstance(photometric, int) else None
        if tiff_mode and all(b == 16 for b in bits) and all(f == 1 for f in sample_format):
            return ("TIFF", tiff_mode, photometric == 1, 0)
    elif fmt == "PPM":
        maxval = _netpbm_maxval(_peek(fp, 512))
        if maxval is not None and maxval > 255:
            return ("PPM", "RGB;16", False, maxval)
    return None


_PNG_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 passes: (first row, row step, first column, column step).
_ADAM7: Final = (
    (0, 8, 0, 8),
    (0, 8, 4, 8),
    (4, 8, 0, 4),
    (0, 4, 2, 4),
    (2, 4, 0, 2),
    (0, 2, 1, 2),
    (1, 2, 0, 1),
)


def _png_rows_complete(fp: IO[bytes]) -> bool:
    """Whether the PNG's IDAT data inflates to every row the header promises.

    Streams the chunks (1 MiB of output at a time), so it costs one extra inflate and no
    image-sized buffer. Headers it cannot parse are left to the decoder (True)."""
    pos = fp.tell()
    try:
        fp.seek(8)
        head = fp.read(8)
        if len(head) < 8 or head[4:] != b"IHDR":
            return True
        ihdr = fp.read(17)[:13]
        width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
        bits = _PNG_CHANNELS.get(ctype, 0) * depth
        if not bits:
            return True
        passes = _ADAM7 if interlace == 1 else ((0, 1, 0, 1),)
        expected = 0
        for y0, dy, x0, dx in passes:
            cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
            if cols > 0 and rows > 0:
                expected += rows * (1 + -(-(cols * bits) // 8))
        inflater = zlib.decompressobj()
        inflated = 0
        while inflated < expected and not inflater.eof:
            header = fp.read(8)
            if len(header) < 8:
                break
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            data = fp.read(length)
            fp.seek(4, os.SEEK_CUR)  # CRC: the decoder checks it
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                continue
            while data and inflated < expected and not inflater.eof:
                inflated += len(inflater.decompress(data, 1 << 20))
                data = inflater.unconsumed_tail
        return inflated >= expected
    except (struct.error, zlib.error, OSError, ValueError):
        return True  # malformed in another way: the decoder reports it
    finally:
        fp.seek(pos)


def _peek(fp: IO[bytes], n: int) -> bytes:
    pos = fp.tell()
    try:
        fp.seek(0)
        return fp.read(n)
    finally:
        fp.seek(pos)


def _netpbm_maxval(head: bytes) -> int | None:
    """maxval of a colour PPM (P3/P6) header, None for anything else."""
    if head[:2] not in (b"P3", b"P6"):
        return None
    text = re.sub(rb"#[^\n\r]*", b" ", head[2:])
    fields = text.split()
    if len(fields) < 3 or not fields[2].isdigit():
        return None
    return int(fields[2])


def _decode_deep(fp: IO[bytes], kind: _DeepKind, orientation: int, label: str) -> _Pixels:
    import cv2  # lazy: importing OpenCV costs ~0.1 s and only this path needs it

    container, mode, gray, maxval = kind
    fp.seek(0)
    buf = np.frombuffer(_without_orientation(fp.read(), container), dtype=np.uint8)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # no stderr noise
    try:
        arr: npt.NDArray[Any] | None = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(f"{label}: truncated or corrupt image ({_one_line(exc)})") from None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if arr is None or arr.dtype != np.uint16 or arr.ndim not in (2, 3):
        raise InputError(
            f"{label}: truncated or corrupt {container} image (OpenCV could not decode it); "
            "re-export or re-download it"
        )
    arr = _orient(arr, orientation)
    if maxval and maxval != 65535:  # OpenCV returns raw PPM samples; Pillow would scale
        arr = np.rint(arr.astype(np.float64) * (65535.0 / maxval)).astype(np.uint16)
    if arr.ndim == 2:
        arr = arr[..., None]
    channels = arr.shape[2]
    alpha: UIntArray | None = arr[..., channels - 1].copy() if channels in (2, 4) else None
    if gray:
        color = np.ascontiguousarray(arr[..., 0])
    else:
        color = np.ascontiguousarray(arr[..., 2::-1] if channels >= 3 else arr[..., :1])
    return _Pixels(color, alpha, 16, mode)


def _without_orientation(data: bytes, container: str) -> bytes:
    """A copy of the file OpenCV cannot rotate, so that we apply orientation exactly once.

    OpenCV 5 applies TIFF orientation even with IMREAD_UNCHANGED (its docs say otherwise)
    and ignores PNG eXIf orientation today; neutralise both rather than rely on either.
    """
    if container == "PNG":
        parts, pos = [data[:8]], 8
        while pos + 12 <= len(data):
            end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
            if data[pos + 4 : pos + 8] != b"eXIf":
                parts.append(data[pos:end])
            pos = end
        parts.append(data[pos:])
        return b"".join(parts)
    if container == "TIFF":
        body = bytearray(data)
        with contextlib.suppress(struct.error, ValueError, IndexError):
            e = "<" if body[:2] == b"II" else ">"
            big = struct.unpack_from(e + "H", body, 2)[0] == 43  # BigTIFF
            ifd0 = struct.unpack_from(e + ("Q" if big else "I"), body, 8 if big else 4)[0]
            count = struct.unpack_from(e + ("Q" if big else "H"), body, ifd0)[0]
            first, size = ifd0 + (8 if big else 2), 20 if big else 12
            for i in range(min(count, 4096)):
                pos = first + i * size
                if struct.unpack_from(e + "HH", body, pos) == (0x0112, 3):
                    struct.pack_into(e + "H", body, pos + (12 if big else 8), 1)
        return bytes(body)
    return data


def _orient(arr: npt.NDArray[Any], orientation: int) -> npt.NDArray[Any]:
    """numpy version of `ImageOps.exif_transpose` for arrays Pillow cannot hold."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return arr.swapaxes(0, 1)[:, ::-1]
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return arr.swapaxes(0, 1)[::-1]
    return arr


def _webp_is_lossless(fp: IO[bytes]) -> bool:
    """True when the first image chunk of a WebP is VP8L (lossless)."""
    head = _peek(fp, 4096)
    pos = 12
    while pos + 8 <= len(head):
        tag = head[pos : pos + 4]
        if tag in (b"VP8L", b"VP8 "):
            return tag == b"VP8L"
        if tag == b"ANMF":  # animation frame: its sub-chunks start after a 16-byte header
            pos += 8 + 16
            continue
        size = struct.unpack_from("<I", head, pos + 4)[0]
        pos += 8 + size + (size & 1)
    return False


# --------------------------------------------------------------------------- EXIF

_EXIF_HEADER: Final = b"Exif\x00\x00"
# Tags that describe how a TIFF stores its pixels: meaningless (or wrong) in another file.
_TIFF_STRUCTURE_TAGS: Final = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284,
     288, 289, 290, 291, 292, 293, 317, 320, 322, 323, 324, 325, 330, 332, 334, 338, 339, 340,
     341, 347, 512, 513, 514, 515, 517, 518, 519, 520, 521, 530, 532, 700, 33723, 34377,
     34675, 37724}
)  # fmt: skip


def _output_exif(
    raw: object,
    exif_obj: Image.Exif,
    orientation: int,
    size: tuple[int, int],
    notes: list[str],
) -> bytes | None:
    """EXIF for the output, or None. Raw blobs are patched in place to keep maker notes."""
    if isinstance(raw, bytes) and raw:
        blob = raw if raw.startswith(_EXIF_HEADER) else _EXIF_HEADER + raw
    else:  # TIFF IFD0, or PNG "Raw profile type exif": rebuild without pixel-layout tags
        had_orientation = 0x0112 in exif_obj or orientation != 1
        for tag in [t for t in exif_obj if t in _TIFF_STRUCTURE_TAGS or t == 0x0112]:
            del exif_obj[tag]
        if len(exif_obj) == 0:
            return None
        if had_orientation:
            exif_obj[0x0112] = 1
        try:
            blob = exif_obj.tobytes()
        except (ValueError, TypeError, struct.error, OSError):
            notes.append(_EXIF_MALFORMED)
            return None
    patched = _patch_exif(blob, size=size, swap_xy=orientation in (5, 6, 7, 8))
    if patched is None:
        notes.append(_EXIF_MALFORMED)
    return patched


def _patch_exif(blob: bytes, *, size: tuple[int, int], swap_xy: bool) -> bytes | None:
    """Orientation -> 1, drop IFD1 (thumbnail), fix resolution/pixel size; None if malformed."""
    body = bytearray(blob[len(_EXIF_HEADER) :])
    try:
        if body[:2] == b"II":
            e = "<"
        elif body[:2] == b"MM":
            e = ">"
        else:
            return None
        if struct.unpack_from(e + "H", body, 2)[0] != 42:
            return None
        ifd0 = struct.unpack_from(e + "I", body, 4)[0]
        entries = _ifd_entries(body, e, ifd0)
        struct.pack_into(e + "I", body, ifd0 + 2 + 12 * len(entries), 0)  # no IFD1
        resolution: dict[int, int] = {}
        for pos, tag, typ, count in entries:
            if tag == 0x0112 and typ == 3 and count == 1:
                struct.pack_into(e + "H", body, pos + 8, 1)
            elif tag in (282, 283) and typ == 5 and count == 1:
                resolution[tag] = struct.unpack_from(e + "I", body, pos + 8)[0]
            elif tag == 0x8769 and typ in (4, 13) and count == 1:
                sub = struct.unpack_from(e + "I", body, pos + 8)[0]
                for spos, stag, styp, scount in _ifd_entries(body, e, sub):
                    if stag in (0xA002, 0xA003) and scount == 1:
                        value = size[0] if stag == 0xA002 else size[1]
                        if styp == 4:
                            struct.pack_into(e + "I", body, spos + 8, value)
                        elif styp == 3 and value <= 0xFFFF:
                            struct.pack_into(e + "H", body, spos + 8, value)
        if swap_xy and len(resolution) == 2:
            x, y = resolution[282], resolution[283]
            xv, yv = bytes(body[x : x + 8]), bytes(body[y : y + 8])
            if len(xv) == len(yv) == 8:
                body[x : x + 8], body[y : y + 8] = yv, xv
    except (struct.error, IndexError, ValueError):
        return None
    return _EXIF_HEADER + bytes(body)


def _ifd_entries(body: bytearray, e: str, offset: int) -> list[tuple[int, int, int, int]]:
    """(entry position, tag, type, count) of one IFD; raises struct.error when out of range."""
    count = struct.unpack_from(e + "H", body, offset)[0]
    if offset + 2 + 12 * count + 4 > len(body):
        raise ValueError("IFD runs past the end of the EXIF block")
    out = []
    for i in range(count):
        pos = offset + 2 + 12 * i
        tag, typ, n = struct.unpack_from(e + "HHI", body, pos)
        out.append((pos, tag, typ, n))
    return out


# --------------------------------------------------------------------------- encoding


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
    notes: list[str] = []
    lossy_container = fmt in (OutputFormat.JPEG, OutputFormat.WEBP)
    depth = 8 if lossy_container else info.bit_depth
    if depth < info.bit_depth:
        notes.append(f"{_NICE_NAMES[fmt]} holds only 8 bits per channel: 16-bit depth reduced to 8")
    gray = info.grayscale and fmt is not OutputFormat.WEBP
    if info.grayscale and not gray:
        notes.append("WebP has no grayscale: written as RGB with equal channels")
    elif gray and fmt is OutputFormat.TIFF and depth == 16 and has_alpha:
        # Valid TIFF, but neither Pillow nor OpenCV can read 16-bit gray+alpha back.
        gray = False
        notes.append("16-bit gray+alpha TIFF is written as RGBA (few programs read the former)")
    flatten = has_alpha and fmt is OutputFormat.JPEG
    if flatten:
        notes.append("JPEG has no transparency: alpha flattened onto white")
    icc = info.icc_profile
    if icc is not None and _icc_space(icc) != (b"GRAY" if gray else b"RGB "):
        notes.append("the ICC profile does not match the written colour model and was dropped")
        icc = None
    exif = info.exif
    if exif is not None and fmt is OutputFormat.JPEG and len(exif) > _JPEG_MAX_EXIF:
        notes.append("the EXIF block is too large for JPEG (64 KB) and was dropped")
        exif = None
    dpi = info.dpi if fmt is not OutputFormat.WEBP else None  # no DPI field; not worth a note
    return _Plan(fmt, depth, gray, has_alpha and not flatten, flatten, icc, exif, dpi, tuple(notes))


def output_notes(
    info: ImageInfo, fmt: OutputFormat, *, has_alpha: bool | None = None
) -> tuple[str, ...]:
    """What writing `info`'s image as `fmt` loses (empty when nothing): for CLI warnings."""
    return _plan(info, fmt, info.has_alpha if has_alpha is None else has_alpha).notes


def encode_image(
    rgb: FloatArray,
    info: ImageInfo,
    fmt: OutputFormat,
    *,
    alpha: UIntArray | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> bytes:
    """Encode restored float RGB (H, W, 3) as a complete file; `jpeg_quality` is also WebP's."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"rgb must be a float (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if alpha is not None and (alpha.shape != (h, w) or alpha.dtype not in (np.uint8, np.uint16)):
        raise ValueError(f"alpha must be uint8/uint16 {(h, w)}, got {alpha.dtype} {alpha.shape}")
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"quality must be between 1 and 100, got {jpeg_quality}")
    plan = _plan(info, fmt, alpha is not None)
    limit = {OutputFormat.JPEG: _JPEG_MAX_SIDE, OutputFormat.WEBP: _WEBP_MAX_SIDE}.get(plan.fmt)
    if limit is not None and max(w, h) > limit:
        raise OutputError(
            f"{_NICE_NAMES[plan.fmt]} cannot store a {w}x{h} image "
            f"(max {limit} pixels per side); choose --format png or tiff"
        )
    if w == 0 or h == 0:
        raise ValueError("cannot encode an empty image")

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

    if plan.fmt is OutputFormat.TIFF:
        return _tiff_bytes(pixels, icc=plan.icc, exif=plan.exif, dpi=plan.dpi)
    if plan.fmt is OutputFormat.PNG and plan.depth == 16 and pixels.shape[2] > 1:
        return _png16_bytes(pixels, icc=plan.icc, exif=plan.exif, dpi=plan.dpi)
    return _pillow_bytes(pixels, plan, jpeg_quality, lossless=info.lossless)


def _alpha_at_depth(alpha: UIntArray, depth: int) -> UIntArray:
    if depth == 16:
        return alpha.astype(np.uint16) * 257 if alpha.dtype == np.uint8 else alpha
    if alpha.dtype == np.uint16:
        return np.rint(alpha / 257.0).astype(np.uint8)
    return alpha


def _pillow_bytes(pixels: npt.NDArray[Any], plan: _Plan, quality: int, *, lossless: bool) -> bytes:
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    params: dict[str, Any] = {}
    if plan.icc is not None:
        params["icc_profile"] = plan.icc
    if plan.exif is not None:
        params["exif"] = plan.exif
    if plan.dpi is not None:
        params["dpi"] = plan.dpi
    if plan.fmt is OutputFormat.JPEG:
        params.update(quality=quality, subsampling=0 if quality >= _FULL_CHROMA_QUALITY else 2)
        pillow_format = "JPEG"
    elif plan.fmt is OutputFormat.WEBP:
        params.update(quality=quality, lossless=lossless, exact=True)
        pillow_format = "WEBP"
    else:
        pillow_format = "PNG"
    out = io.BytesIO()
    image.save(out, pillow_format, **params)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16_bytes(
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
        meta.append(_png_chunk(b"eXIf", exif.removeprefix(_EXIF_HEADER)))
    if c in (3, 4):
        import cv2

        bgr = pixels[..., [2, 1, 0, 3][:c]]
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
        if not ok:
            raise OSError("OpenCV could not encode the PNG")
        encoded = buf.tobytes()
        return encoded[:33] + b"".join(meta) + encoded[33:]
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4}[c], 0, 0, 0)
    idat = _png_paeth_zlib(pixels)
    step = 1 << 20
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header), *meta]
        + [_png_chunk(b"IDAT", idat[i : i + step]) for i in range(0, len(idat), step)]
        + [_png_chunk(b"IEND", b"")]
    )


def _png_paeth_zlib(pixels: npt.NDArray[Any]) -> bytes:
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


def _tiff_bytes(
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
            _exif_into_ifd(exif, ifd)  # first, so that the layout tags below win
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


def _exif_into_ifd(exif: bytes, ifd: TiffImagePlugin.ImageFileDirectory_v2) -> None:
    """Copy EXIF IFD0 tags and the EXIF/GPS sub-IFDs into a TIFF IFD0, as Pillow's writer does."""
    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except (SyntaxError, ValueError, struct.error, OSError):
        return
    for tag in parsed:
        if tag in _TIFF_STRUCTURE_TAGS:
            continue
        if tag in TiffTags.TAGS_V2_GROUPS:
            sub = dict(parsed.get_ifd(tag))
            if 0xA005 in sub:  # Interop pointer: re-serialise it as a nested IFD too
                interop = parsed.get_ifd(0xA005)
                if interop:
                    sub[0xA005] = dict(interop)
                else:
                    del sub[0xA005]
            if sub:
                ifd[tag] = sub
        else:
            ifd[tag] = parsed[tag]


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The image files of an evaluation or training folder, sorted, hidden files excluded."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


# --------------------------------------------------------------------------- writing


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
    data = encode_image(rgb, info, fmt, alpha=alpha, jpeg_quality=jpeg_quality)
    try:
        _atomic_write(target, data, overwrite=overwrite)
    except OutputError:
        raise
    except OSError as exc:
        raise _output_error(target, exc) from None


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically (checkpoints, exported weights)."""
    target = Path(path)
    try:
        _atomic_write(target, data, overwrite=True)
    except OutputError:
        raise
    except OSError as exc:
        raise _output_error(target, exc) from None


def _atomic_write(target: Path, data: bytes, *, overwrite: bool) -> None:
    folder = target.parent
    tmp, fd = _create_temp(folder, target.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            with contextlib.suppress(OSError):  # keep the replaced file's permissions
                tmp.chmod(stat.S_IMODE(target.stat().st_mode))
            try:
                tmp.replace(target)
            except FileNotFoundError as exc:
                raise _vanished(tmp, target, exc) from None
        else:
            _link_no_clobber(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _create_temp(folder: Path, name: str) -> tuple[Path, int]:
    """Hidden temp file next to the target (same filesystem, so the rename is atomic).

    Created with mode 0o666 so the umask applies, unlike `tempfile.mkstemp`'s 0o600.
    """
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        return tmp, fd
    raise OSError(errno.EEXIST, "could not create a temporary file")


def check_writable_folder(folder: Path, *, create: bool = False) -> None:
    """Raise `OutputError` unless a file can be created in `folder` (made first if `create`).

    A real probe (create and remove a temporary file), not `os.access`: root passes
    permission checks that /proc, read-only mounts and full quotas still refuse. Run before
    an image is restored, so an unwritable output costs no restore time."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise OutputError(f"{folder}: the output folder does not exist; create it first")
        tmp, fd = _create_temp(folder, "mprnet-write-check")
        os.close(fd)
        tmp.unlink()
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            reason = "cannot create this folder (a part of its path is missing or not a folder)"
        else:
            reason = describe_os_error(exc)
        raise OutputError(f"{folder}: {reason}; choose another -o") from None


_TEMP_NAME: Final = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp")


def temp_target(name: str) -> str | None:
    """The output name a `write_image` temporary file (`_create_temp`) was for, else None.

    Only a killed process (SIGKILL, power loss) leaves one behind; batch runs use this to
    remove the stale ones of the outputs they handle, so a resumed run leaves no debris. A
    fresh one may belong to a live writer: see `mprnet_cli.jobs.STALE_TEMP_SECONDS`.
    """
    match = _TEMP_NAME.fullmatch(name)
    return match["target"] if match else None


_NO_HARDLINK_ERRNOS: Final = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
)


def _link_no_clobber(tmp: Path, target: Path) -> None:
    """Move tmp into place only if target does not exist, without a check-then-replace race."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputExistsError(
            f"{target} already exists; pass --overwrite to replace it"
        ) from None
    except FileNotFoundError as exc:
        raise _vanished(tmp, target, exc) from None
    except OSError as exc:  # no hard links here (FAT, some network shares): best effort
        if exc.errno not in _NO_HARDLINK_ERRNOS:
            raise
        if target.exists():
            raise OutputExistsError(
                f"{target} already exists; pass --overwrite to replace it"
            ) from None
        try:
            tmp.replace(target)
        except FileNotFoundError as exc2:
            raise _vanished(tmp, target, exc2) from None
        return
    with contextlib.suppress(FileNotFoundError):  # the output is in place: that is what counts
        tmp.unlink()


def _vanished(tmp: Path, target: Path, exc: OSError) -> OutputError:
    """ENOENT when moving the temp into place: the folder went away, or just the temp file.

    The latter happens when something else deleted it meanwhile (a cleanup tool, or a batch
    run of an older mprnet that removed every temp file of the outputs it reached).
    """
    if not tmp.parent.is_dir():
        return _output_error(target, exc)
    return OutputError(
        f"{target}: its temporary file {tmp.name} was deleted by another program while it "
        "was being written; nothing was written, run again"
    )


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open folders)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _output_error(target: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOENT:
        return OutputError(f"{target}: the folder {target.parent} does not exist; create it first")
    return OutputError(f"{target}: {describe_os_error(exc)}")
