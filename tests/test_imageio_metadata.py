"""Tests for mprnet_cli.imageio.metadata: orientation, EXIF, ICC and DPI carried from the
input to the output."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageOps

from mprnet_cli import imageio as mio
from mprnet_cli.imageio import OutputFormat
from mprnet_cli.imageio import encode as mio_encode
from tests.helpers import (
    ALL_FORMATS,
    MAKE,
    MODEL,
    TAKEN,
    as_u8,
    as_u16,
    close,
    cv2_bytes,
    info_for,
    make_exif,
    pil_bytes,
    rand8,
    rand16,
    raw_png16,
    srgb_icc,
)

RNG = np.random.default_rng(1234)


def gray_icc() -> bytes:
    """A GRAY-space profile: the sRGB one with its colour-space signature patched."""
    icc = bytearray(srgb_icc())
    icc[16:20] = b"GRAY"
    return bytes(icc)


def quadrants(h: int = 32, w: int = 48) -> npt.NDArray[np.uint8]:
    """Four flat colours (top-left red, top-right green, bottom-left blue, bottom-right white)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2 :] = (0, 255, 0)
    img[h // 2 :, : w // 2] = (0, 0, 255)
    img[h // 2 :, w // 2 :] = (255, 255, 255)
    return img


def corner_colors(rgb8: npt.NDArray[np.uint8]) -> list[tuple[int, ...]]:
    """Colours near the four corners: TL, TR, BL, BR."""
    h, w = rgb8.shape[:2]
    return [
        tuple(int(v) for v in rgb8[y, x])
        for y, x in ((2, 2), (2, w - 3), (h - 3, 2), (h - 3, w - 3))
    ]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_exif_transpose_on_both_decoders(orientation: int) -> None:
    """The Pillow path and the numpy path (16-bit, via OpenCV) agree with exif_transpose."""
    src = rand8(5, 7)
    exif = make_exif(orientation)
    png8 = pil_bytes(Image.fromarray(src), "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(png8))))
    got8 = as_u8(mio.read_image(png8))
    got16 = as_u16(mio.read_image(raw_png16(src.astype(np.uint16) * 257, exif=exif)))
    assert np.array_equal(got8, expected)
    assert np.array_equal(got16, expected.astype(np.uint16) * 257)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_16bit_tiff_orientation_is_applied(orientation: int) -> None:
    """OpenCV ignores TIFF orientation with IMREAD_UNCHANGED; we apply it ourselves."""
    src = rand16(5, 7)
    tiff = mio_encode.tiff_bytes(src, icc=None, exif=make_exif(orientation), dpi=None)
    with Image.open(io.BytesIO(tiff)) as im:
        assert im.tag_v2.get(0x0112) == orientation
        expected8 = np.asarray(ImageOps.exif_transpose(im))  # Pillow's idea, at 8 bits
    decoded = mio.read_image(tiff)
    assert decoded.info.bit_depth == 16
    k = {3: 2, 6: -1, 8: 1}[orientation]
    assert np.array_equal(as_u16(decoded), np.rot90(src, k))
    assert np.array_equal(as_u16(decoded) >> 8, expected8)


@pytest.mark.parametrize("orientation", [3, 6])
@pytest.mark.parametrize("source", ["JPEG", "PNG", "TIFF", "WEBP"])
@pytest.mark.parametrize("out_fmt", ALL_FORMATS)
def test_orientation_applied_and_reset_other_exif_kept(
    tmp_path: Path, orientation: int, source: str, out_fmt: OutputFormat
) -> None:
    image = Image.fromarray(quadrants())
    params: dict[str, Any] = {"exif": make_exif(orientation)}
    if source in ("JPEG", "WEBP"):
        params["quality"] = 100
    path = tmp_path / f"in.{source.lower()}"
    path.write_bytes(pil_bytes(image, source, **params))
    decoded = mio.read_image(path)

    red, green, blue, white = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    if orientation == 3:  # rotated 180 degrees
        assert (decoded.width, decoded.height) == (48, 32)
        expected = [white, blue, green, red]
    else:  # 6: rotate 90 degrees clockwise to view
        assert (decoded.width, decoded.height) == (32, 48)
        expected = [blue, red, white, green]
    got = corner_colors(as_u8(decoded))
    assert all(close(g, e) for g, e in zip(got, expected, strict=True)), got

    out = tmp_path / f"out{mio.extension_for(out_fmt)}"
    mio.write_image(out, decoded.rgb, decoded.info, out_fmt)
    with Image.open(out) as im:
        assert im.size == (decoded.width, decoded.height)
        exif = im.getexif()
        assert exif.get(0x0112) == 1
        assert exif.get(0x010F) == MAKE and exif.get(0x0110) == MODEL
        assert exif.get_ifd(0x8769).get(0x9003) == TAKEN
        # the written file is upright: a viewer that honours EXIF shows the same thing
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert all(close(g, e) for g, e in zip(corner_colors(shown), expected, strict=True))


def test_tiff_exif_drops_pixel_layout_tags() -> None:
    tiff = pil_bytes(Image.fromarray(rand8(8, 8)), "TIFF", exif=make_exif(6))
    decoded = mio.read_image(tiff)
    jpeg = mio.encode_image(decoded.rgb, decoded.info, OutputFormat.JPEG)
    exif = Image.open(io.BytesIO(jpeg)).getexif()
    assert exif.get(0x010F) == MAKE and exif.get(0x0112) == 1
    assert exif.get_ifd(0x8769).get(0x9003) == TAKEN
    assert not {256, 257, 258, 259, 273, 279} & set(exif)  # StripOffsets etc. would be lies


def test_exif_size_resolution_and_thumbnail_are_fixed() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x011A] = 300.0  # XResolution
    exif[0x011B] = 150.0  # YResolution
    exif.get_ifd(0x8769)[0xA002] = 48  # PixelXDimension of the stored (sideways) image
    exif.get_ifd(0x8769)[0xA003] = 32
    body = bytearray(exif.tobytes()[6:])
    e = ">" if body[:2] == b"MM" else "<"
    # append a one-entry IFD1 (as cameras do for the thumbnail) and link it from IFD0
    ifd0 = struct.unpack_from(e + "I", body, 4)[0]
    n0 = struct.unpack_from(e + "H", body, ifd0)[0]
    ifd1 = len(body)
    body += struct.pack(e + "HHHIHxxI", 1, 0x0103, 3, 1, 6, 0)
    struct.pack_into(e + "I", body, ifd0 + 2 + 12 * n0, ifd1)
    jpeg = pil_bytes(Image.fromarray(quadrants()), "JPEG", exif=b"Exif\x00\x00" + bytes(body))

    decoded = mio.read_image(jpeg)
    assert decoded.info.exif is not None
    fixed = decoded.info.exif[6:]
    assert struct.unpack_from(e + "I", fixed, ifd0 + 2 + 12 * n0)[0] == 0  # IFD1 unlinked
    out = Image.Exif()
    out.load(decoded.info.exif)
    assert out[0x0112] == 1
    assert (float(out[0x011A]), float(out[0x011B])) == (150.0, 300.0)
    assert (out.get_ifd(0x8769)[0xA002], out.get_ifd(0x8769)[0xA003]) == (32, 48)


@pytest.mark.filterwarnings("error")
def test_malformed_exif_is_dropped_with_a_note() -> None:
    jpeg = pil_bytes(
        Image.fromarray(rand8(8, 8)), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"
    )
    decoded = mio.read_image(jpeg)
    assert decoded.info.exif is None
    assert any("EXIF" in note for note in decoded.info.notes)


@pytest.mark.parametrize("out_fmt", ALL_FORMATS)
@pytest.mark.parametrize("depth", [8, 16])
def test_icc_profile_is_copied_byte_for_byte(out_fmt: OutputFormat, depth: int) -> None:
    icc = srgb_icc()
    info = info_for(bit_depth=depth, icc_profile=icc, exif=make_exif(), dpi=(300.0, 300.0))
    data = mio.encode_image(np.asarray(RNG.random((12, 10, 3)), np.float32), info, out_fmt)
    with Image.open(io.BytesIO(data)) as im:
        assert im.info.get("icc_profile") == icc
        assert im.getexif().get(0x010F) == MAKE
        assert im.getexif().get_ifd(0x8769).get(0x9003) == TAKEN
    decoded = mio.read_image(data)
    assert decoded.info.icc_profile == icc
    expected_depth = depth if out_fmt in (OutputFormat.PNG, OutputFormat.TIFF) else 8
    assert decoded.info.bit_depth == expected_depth


def test_icc_profile_dropped_when_colour_model_differs() -> None:
    rgb = np.full((4, 4, 3), 0.5, np.float32)
    gray_info = info_for(grayscale=True, mode="L", icc_profile=gray_icc())
    with Image.open(io.BytesIO(mio.encode_image(rgb, gray_info, OutputFormat.PNG))) as im:
        assert im.mode == "L" and im.info.get("icc_profile") == gray_icc()
    assert mio.output_notes(gray_info, OutputFormat.WEBP)  # WebP stores RGB: profile dropped
    with Image.open(io.BytesIO(mio.encode_image(rgb, gray_info, OutputFormat.WEBP))) as im:
        assert "icc_profile" not in im.info


@pytest.mark.parametrize("source", ["JPEG", "PNG", "TIFF", "BMP"])
def test_dpi_is_read_snapped_and_kept(source: str) -> None:
    decoded = mio.read_image(pil_bytes(Image.fromarray(rand8(8, 12)), source, dpi=(300, 200)))
    assert decoded.info.dpi == (300.0, 200.0)  # PNG/BMP store px/m: 299.9994 is snapped back
    for fmt in (OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.TIFF):
        again = mio.read_image(mio.encode_image(decoded.rgb, decoded.info, fmt))
        assert again.info.dpi == (300.0, 200.0), fmt


def test_dpi_swapped_by_90_degree_orientation_and_absent_stays_absent() -> None:
    data = pil_bytes(Image.fromarray(rand8(8, 12)), "JPEG", dpi=(300, 200), exif=make_exif(6))
    assert mio.read_image(data).info.dpi == (200.0, 300.0)
    assert mio.read_image(pil_bytes(Image.fromarray(rand8(4, 4)), "PNG")).info.dpi is None
    assert mio.read_image(cv2_bytes(rand16(4, 4), ".tiff")).info.dpi is None  # not Pillow's (1, 1)


def test_corrupt_exif_gives_one_note() -> None:
    jpeg = pil_bytes(
        Image.fromarray(rand8(8, 8)), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"
    )
    notes = [n for n in mio.read_image(jpeg).info.notes if "EXIF" in n]
    assert notes == ["the EXIF data is malformed and was not copied"]
