"""EXIF, ICC, DPI and orientation: read from the source, made right for the output.

* Orientation: EXIF orientation is applied with `ImageOps.exif_transpose` semantics, so
  decoded pixels are upright. DPI is swapped for 90-degree orientations.
* The ICC profile is copied when its colour space matches the written pixels (RGB profile
  for colour, GRAY for gray); EXIF is copied with Orientation set to 1, the thumbnail IFD
  dropped (it still shows the unrestored, un-rotated image) and PixelX/YDimension set to the
  upright size. Otherwise the block is kept byte for byte, so maker notes survive
  (JPEG/PNG/WebP to JPEG/PNG/WebP; TIFF keeps EXIF as tags, so those paths re-serialise it).
* JPEG, PNG, WebP and TIFF hold ICC and EXIF; DPI is written to JPEG, PNG and TIFF (WebP has
  no DPI field).
"""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Final

from PIL import Image, TiffImagePlugin, TiffTags

from mprnet_cli.imageio.formats import OutputFormat, format_of_container

EXIF_MALFORMED: Final = "the EXIF data is malformed and was not copied"


def orientation_of(value: object) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def valid_dpi(value: object) -> tuple[float, float] | None:
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


def icc_space(icc: bytes) -> bytes:
    """ICC header colour space signature, e.g. b'RGB ', b'GRAY', b'CMYK'."""
    return icc[16:20] if len(icc) >= 20 else b""


def without_orientation(data: bytes, container: str) -> bytes:
    """A copy of the file OpenCV cannot rotate, so that we apply orientation exactly once.

    OpenCV 5 applies TIFF orientation even with IMREAD_UNCHANGED (its docs say otherwise)
    and ignores PNG eXIf orientation today; neutralise both rather than rely on either.
    """
    fmt = format_of_container(container)
    if fmt is OutputFormat.PNG:
        parts, pos = [data[:8]], 8
        while pos + 12 <= len(data):
            end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
            if data[pos + 4 : pos + 8] != b"eXIf":
                parts.append(data[pos:end])
            pos = end
        parts.append(data[pos:])
        return b"".join(parts)
    if fmt is OutputFormat.TIFF:
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


EXIF_HEADER: Final = b"Exif\x00\x00"
# Tags that describe how a TIFF stores its pixels: meaningless (or wrong) in another file.
_TIFF_STRUCTURE_TAGS: Final = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284,
     288, 289, 290, 291, 292, 293, 317, 320, 322, 323, 324, 325, 330, 332, 334, 338, 339, 340,
     341, 347, 512, 513, 514, 515, 517, 518, 519, 520, 521, 530, 532, 700, 33723, 34377,
     34675, 37724}
)  # fmt: skip


def output_exif(
    raw: object,
    exif_obj: Image.Exif,
    orientation: int,
    size: tuple[int, int],
    notes: list[str],
) -> bytes | None:
    """EXIF for the output, or None. Raw blobs are patched in place to keep maker notes."""
    if isinstance(raw, bytes) and raw:
        blob = raw if raw.startswith(EXIF_HEADER) else EXIF_HEADER + raw
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
            notes.append(EXIF_MALFORMED)
            return None
    patched = _patch_exif(blob, size=size, swap_xy=orientation in (5, 6, 7, 8))
    if patched is None:
        notes.append(EXIF_MALFORMED)
    return patched


def _patch_exif(blob: bytes, *, size: tuple[int, int], swap_xy: bool) -> bytes | None:
    """Orientation -> 1, drop IFD1 (thumbnail), fix resolution/pixel size; None if malformed."""
    body = bytearray(blob[len(EXIF_HEADER) :])
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
    return EXIF_HEADER + bytes(body)


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


def exif_into_ifd(exif: bytes, ifd: TiffImagePlugin.ImageFileDirectory_v2) -> None:
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
