"""Decode images for the network: upright float32 RGB plus what the writer needs.

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
  (Pillow would fill the rest with black): `png_rows_complete` inflates it once to check.
  Warnings Pillow emits while decoding (e.g. "Corrupt EXIF data") become `ImageInfo.notes`,
  not stderr noise (`warnings_capture.py`).
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import stat
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms, ImageOps, TiffImagePlugin, UnidentifiedImageError

from mprnet_cli.errors import ImageTooLargeError, InputError
from mprnet_cli.imageio.formats import OutputFormat, container_of, format_of_container
from mprnet_cli.imageio.metadata import (
    EXIF_MALFORMED,
    icc_space,
    orientation_of,
    output_exif,
    valid_dpi,
    without_orientation,
)
from mprnet_cli.imageio.pixels import (
    DecodedImage,
    ImageInfo,
    UIntArray,
    in_uint16_range,
    in_unit_range,
    to_uint16,
    unit_rgb,
)
from mprnet_cli.imageio.warnings_capture import warnings_as_notes
from mprnet_cli.settings import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS

_STDIN_NAME: Final = "<stdin>"

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
            mode = os.fstat(fp.fileno()).st_mode
            if not stat.S_ISREG(mode):  # a FIFO, `<(cat a.png)`, a device: read as a stream
                data = _read_bounded(fp, label)
                if not data:
                    raise InputError(f"{label}: input is empty; expected an image file")
                return _read_stream(io.BytesIO(data), label, max_pixels)
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


#: The most a pipe or device is read for one image (1 GiB): `/dev/zero` as an input ends
#: in an error, not in all the memory there is.
STREAM_LIMIT: Final = 1 << 30


def _read_bounded(fp: IO[bytes], label: str, limit: int = STREAM_LIMIT) -> bytes:
    """All of a non-seekable input (decoders need to seek), up to `limit` bytes."""
    data = fp.read(limit + 1)
    if len(data) > limit:
        raise InputError(
            f"{label}: more than {limit >> 20} MiB from a pipe or device; save it to a file"
        )
    return data


def _read_stream(fp: IO[bytes], label: str, max_pixels: int | None) -> DecodedImage:
    # Pillow warns (e.g. "Corrupt EXIF data") instead of raising: that is for the user, via
    # `notes`, not a Python warning on stderr.
    with _pillow_bomb_check_off(), warnings_as_notes() as caught:
        decoded = open_and_decode(fp, label, max_pixels)
    if EXIF_MALFORMED in decoded.info.notes:  # one warning per problem: ours says more
        caught = [text for text in caught if not text.startswith("Corrupt EXIF data")]
    extra = [f"{label}: {' '.join(text.split())}" for text in caught if text.strip()]
    if not extra:
        return decoded
    notes = tuple(dict.fromkeys([*decoded.info.notes, *extra]))
    return dataclasses.replace(decoded, info=dataclasses.replace(decoded.info, notes=notes))


def open_and_decode(fp: IO[bytes], label: str, max_pixels: int | None) -> DecodedImage:
    try:
        im = Image.open(fp, formats=_open_formats())
    except UnidentifiedImageError:
        if container_of(_peek(fp, 16)) is OutputFormat.TIFF:
            tiff, png = OutputFormat.TIFF.spec.name, OutputFormat.PNG.spec.name
            raise InputError(
                f"{label}: a {tiff} layout Pillow cannot read (e.g. 16-bit gray+alpha); "
                f"convert it to {png} or RGB(A) {tiff} first"
            ) from None
        raise InputError(f"{label}: not an image file, or a format Pillow cannot read") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{label}: corrupt image header ({_one_line(exc)})") from None
    with im:
        width, height = im.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLargeError(
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
    container = format_of_container(im.format)
    if container is OutputFormat.PNG and not png_rows_complete(fp):
        # Pillow fills the rows missing from a complete-but-short zlib stream with black
        # and OpenCV fails noisily on stderr: refuse the file before either decodes it
        # (Pillow's PNG getexif() already does).
        raise InputError(
            f"{label}: truncated {container.spec.name} (its image data ends before the last row); "
            "re-export or re-download it"
        )
    # A format's other Pillow names are variants (MPO: a JPEG whose extra pictures are
    # previews of the first, not pages): they read as the format itself, with one frame.
    fmt = container.spec.pillow[0] if container is not None else im.format
    notes: list[str] = []
    frames = 1 if fmt != im.format else int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        notes.append(f"{label} has {frames} frames/pages; only the first is restored")

    # Orientation is read before load(): Pillow's TIFF loader applies and deletes it.
    exif_obj = im.getexif()
    orientation = orientation_of(exif_obj.get(0x0112))
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
    dpi = valid_dpi(im.info.get("dpi"))
    if isinstance(im, TiffImagePlugin.TiffImageFile) and 282 not in im.tag_v2:
        dpi = None  # Pillow reports (1, 1) for a TIFF without resolution tags
    if dpi is not None and transposed:
        dpi = (dpi[1], dpi[0])

    h, w = px.color.shape[:2]
    exif = output_exif(raw_exif, exif_obj, orientation, (w, h), notes)

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
        lossless=container is OutputFormat.WEBP and _webp_is_lossless(fp),
        notes=tuple(notes),
    )
    return DecodedImage(rgb=rgb, alpha=px.alpha, info=info)


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
    if isinstance(icc, bytes) and icc_space(icc) == b"CMYK":
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


# A 16-bit colour file Pillow would cut to 8 bits: (container, mode, gray, PPM maxval or 0).
_DeepKind = tuple[str, str, bool, int]


def _deep_color_kind(im: Image.Image, fp: IO[bytes]) -> _DeepKind | None:
    """Detect files whose samples are deeper than the 8-bit mode Pillow would give us."""
    fmt = im.format
    container = format_of_container(fmt)
    if container is OutputFormat.PNG:
        head = _peek(fp, 26)
        if len(head) == 26 and head[24] == 16 and head[25] in (2, 4, 6):
            mode = {2: "RGB;16", 4: "LA;16", 6: "RGBA;16"}[head[25]]
            return (container.spec.pillow[0], mode, head[25] == 4, 0)
    elif container is OutputFormat.TIFF and isinstance(im, TiffImagePlugin.TiffImageFile):
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
            return (container.spec.pillow[0], tiff_mode, photometric == 1, 0)
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


def png_rows_complete(fp: IO[bytes]) -> bool:
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
    buf = np.frombuffer(without_orientation(fp.read(), container), dtype=np.uint8)
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
