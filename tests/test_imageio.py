"""Tests for mprnet_cli.imageio: same kind of file out as in, atomic writes, clean errors.

Independent oracles where possible: Pillow reads what we write, OpenCV reads/writes the
16-bit colour files Pillow cannot represent, and a tiny PNG writer here builds the rest.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from mprnet_cli import imageio as mio
from mprnet_cli.errors import InputError, OutputError, OutputExistsError, UsageError
from mprnet_cli.imageio import DecodedImage, ImageInfo, OutputFormat
from mprnet_cli.imageio import decode as mio_decode
from mprnet_cli.imageio import encode as mio_encode

RNG = np.random.default_rng(1234)
MAKE, MODEL, TAKEN = "Canon", "EOS R5", "2024:05:06 07:08:09"
ALL_FORMATS = [OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.TIFF]
FEW_EXAMPLES = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --------------------------------------------------------------------------- helpers


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gray_icc() -> bytes:
    """A GRAY-space profile: the sRGB one with its colour-space signature patched."""
    icc = bytearray(srgb_icc())
    icc[16:20] = b"GRAY"
    return bytes(icc)


def make_exif(orientation: int | None = None, **extra: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = MAKE
    exif[0x0110] = MODEL
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = TAKEN
    for key, value in extra.items():
        sub[int(key.removeprefix("tag_"), 16)] = value
    return exif.tobytes()


def rand8(h: int, w: int, c: int = 3) -> npt.NDArray[np.uint8]:
    shape = (h, w) if c == 1 else (h, w, c)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def rand16(h: int, w: int, c: int = 3) -> npt.NDArray[np.uint16]:
    shape = (h, w) if c == 1 else (h, w, c)
    return RNG.integers(0, 65536, shape, dtype=np.uint16)


def pil_bytes(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def cv2_bytes(rgb: npt.NDArray[Any], ext: str) -> bytes:
    """16-bit RGB(A) file via OpenCV (RGB order in, BGR on disk as OpenCV expects)."""
    order = [2, 1, 0, 3][: rgb.shape[2]]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., order]))
    assert ok
    return bytes(buf.tobytes())


def cv2_read(data: bytes) -> npt.NDArray[Any]:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert arr is not None
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    return np.asarray(arr)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png16(arr: npt.NDArray[np.uint16], *, exif: bytes | None = None) -> bytes:
    """Minimal 16-bit PNG (filter 0), independent of the code under test."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    rows = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, -1)
    data = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    extra = chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")) if exif else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )


def as_u8(d: DecodedImage) -> npt.NDArray[np.uint8]:
    return mio.to_uint8(d.rgb)


def as_u16(d: DecodedImage) -> npt.NDArray[np.uint16]:
    return mio.to_uint16(d.rgb)


def info_for(**kw: Any) -> ImageInfo:
    base: dict[str, Any] = dict(
        format="PNG",
        mode="RGB",
        bit_depth=8,
        grayscale=False,
        has_alpha=False,
        icc_profile=None,
        exif=None,
        dpi=None,
    )
    base.update(kw)
    return ImageInfo(**base)


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


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- round trips


def test_png_8bit_rgb_round_trip_is_exact(tmp_path: Path) -> None:
    src = rand8(23, 37)
    (tmp_path / "in.png").write_bytes(pil_bytes(Image.fromarray(src), "PNG"))
    decoded = mio.read_image(tmp_path / "in.png")
    assert decoded.rgb.dtype == np.float32 and decoded.rgb.shape == (23, 37, 3)
    assert (decoded.width, decoded.height) == (37, 23)
    assert decoded.rgb.min() >= 0.0 and decoded.rgb.max() <= 1.0
    assert decoded.info.format == "PNG" and decoded.info.bit_depth == 8
    mio.write_image(tmp_path / "out.png", decoded.rgb, decoded.info, OutputFormat.SAME)
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), src)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_color_keeps_16_bits_exactly(tmp_path: Path, ext: str, channels: int) -> None:
    src = rand16(21, 34, channels)
    path = tmp_path / f"in{ext}"
    path.write_bytes(cv2_bytes(src, ext))
    decoded = mio.read_image(path)
    info = decoded.info
    assert (info.bit_depth, info.grayscale, info.has_alpha) == (16, False, channels == 4)
    assert info.mode == ("RGBA;16" if channels == 4 else "RGB;16")
    assert np.array_equal(as_u16(decoded), src[..., :3])
    if channels == 4:
        assert decoded.alpha is not None and decoded.alpha.dtype == np.uint16
        assert np.array_equal(decoded.alpha, src[..., 3])
    out = tmp_path / f"out{ext}"
    mio.write_image(out, decoded.rgb, info, OutputFormat.SAME, alpha=decoded.alpha)
    assert np.array_equal(cv2_read(out.read_bytes()), src)
    again = mio.read_image(out)  # and our own reader agrees
    assert again.info.bit_depth == 16 and np.array_equal(as_u16(again), src[..., :3])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_gray_round_trip(tmp_path: Path, fmt: str) -> None:
    src = rand16(19, 26, 1)
    (tmp_path / "in").write_bytes(pil_bytes(Image.fromarray(src), fmt))
    decoded = mio.read_image(tmp_path / "in")
    assert decoded.info.grayscale and decoded.info.bit_depth == 16
    assert decoded.info.mode.startswith("I;16")
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])
    data = mio.encode_image(decoded.rgb, decoded.info, OutputFormat.SAME)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt and im.mode == "I;16"
        assert np.array_equal(np.asarray(im), src)


def test_16bit_gray_alpha_png_stays_gray_alpha_16bit(tmp_path: Path) -> None:
    src = rand16(17, 22, 2)
    decoded = mio.read_image(raw_png16(src))
    assert decoded.info.mode == "LA;16" and decoded.info.grayscale and decoded.info.bit_depth == 16
    assert decoded.alpha is not None and np.array_equal(decoded.alpha, src[..., 1])
    data = mio.encode_image(decoded.rgb, decoded.info, OutputFormat.SAME, alpha=decoded.alpha)
    assert data[24:26] == bytes([16, 4])  # IHDR: 16-bit gray + alpha
    assert np.array_equal(cv2_read(data)[..., [0, 3]], src)  # OpenCV expands LA to BGRA
    for fmt in (OutputFormat.PNG, OutputFormat.TIFF):
        again = mio.read_image(
            mio.encode_image(decoded.rgb, decoded.info, fmt, alpha=decoded.alpha)
        )
        # Nothing reads 16-bit gray+alpha TIFF back, so TIFF gets RGBA (and says so).
        assert again.info.grayscale is (fmt is OutputFormat.PNG) and again.info.bit_depth == 16
        assert bool(mio.output_notes(decoded.info, fmt)) is (fmt is OutputFormat.TIFF)
        assert np.array_equal(as_u16(again), np.repeat(src[..., :1], 3, axis=2))
        assert again.alpha is not None and np.array_equal(again.alpha, src[..., 1])


def test_16bit_ppm_is_read_at_16_bits_and_scaled() -> None:
    src = RNG.integers(0, 4096, (9, 11, 3), dtype=np.uint16)
    ppm = b"P6\n# dcraw\n11 9\n4095\n" + src.astype(">u2").tobytes()
    decoded = mio.read_image(ppm)
    assert decoded.info.bit_depth == 16 and decoded.info.format == "PPM"
    expected = np.rint(src * (65535 / 4095)).astype(np.uint16)
    assert np.array_equal(as_u16(decoded), expected)
    assert mio.resolve_format(OutputFormat.SAME, decoded.info) is OutputFormat.PNG


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [(OutputFormat.PNG, "png"), (OutputFormat.TIFF, "tiff"), (OutputFormat.WEBP, "webp")],
)
@pytest.mark.parametrize("depth", [8, 16])
def test_alpha_passes_through_bit_exact(fmt: OutputFormat, ext: str, depth: int) -> None:
    if depth == 8:
        src: npt.NDArray[Any] = rand8(20, 30, 4)
        data = pil_bytes(Image.fromarray(src), "PNG")
    else:
        src = rand16(20, 30, 4)
        data = cv2_bytes(src, ".png")
    decoded = mio.read_image(data)
    assert decoded.alpha is not None and np.array_equal(decoded.alpha, src[..., 3])
    restored = decoded.rgb * 0.5  # the network changes the colours, never the alpha
    out = mio.read_image(mio.encode_image(restored, decoded.info, fmt, alpha=decoded.alpha))
    assert out.alpha is not None
    if fmt is OutputFormat.WEBP and depth == 16:  # WebP is 8-bit: alpha rounded, documented
        assert np.array_equal(out.alpha, np.rint(src[..., 3] / 257).astype(np.uint8))
    else:
        assert out.alpha.dtype == src.dtype and np.array_equal(out.alpha, src[..., 3])


@FEW_EXAMPLES
@given(
    arr=hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3, 4]))
    ),
    fmt=st.sampled_from([OutputFormat.PNG, OutputFormat.TIFF]),
)
def test_lossless_round_trip_property(arr: npt.NDArray[np.uint8], fmt: OutputFormat) -> None:
    image = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    decoded = mio.read_image(pil_bytes(image, "PNG"))
    again = mio.read_image(mio.encode_image(decoded.rgb, decoded.info, fmt, alpha=decoded.alpha))
    assert np.array_equal(as_u8(again), as_u8(decoded))
    assert again.info.grayscale == (arr.shape[2] == 1)
    if arr.shape[2] == 4:
        assert again.alpha is not None and np.array_equal(again.alpha, arr[..., 3])


@FEW_EXAMPLES
@given(
    arr=hnp.arrays(
        np.uint16, st.tuples(st.integers(1, 7), st.integers(1, 7), st.sampled_from([2, 3, 4]))
    )
)
def test_16bit_writers_property(arr: npt.NDArray[np.uint16]) -> None:
    """Our 16-bit PNG (OpenCV and numpy-Paeth paths) and TIFF writers are lossless."""
    decoded = mio.read_image(raw_png16(arr))
    for fmt in (OutputFormat.PNG, OutputFormat.TIFF):
        again = mio.read_image(
            mio.encode_image(decoded.rgb, decoded.info, fmt, alpha=decoded.alpha)
        )
        assert np.array_equal(as_u16(again), as_u16(decoded))
        if arr.shape[2] in (2, 4):
            assert again.alpha is not None and np.array_equal(again.alpha, arr[..., -1])


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_grayscale_stays_grayscale(fmt: str) -> None:
    src = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    decoded = mio.read_image(pil_bytes(Image.fromarray(src), fmt))
    assert decoded.info.grayscale and decoded.info.mode == "L" and decoded.info.bit_depth == 8
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 1])
    with Image.open(
        io.BytesIO(mio.encode_image(decoded.rgb, decoded.info, OutputFormat.SAME))
    ) as im:
        assert im.format == fmt and im.mode == "L"
        if fmt != "JPEG":
            assert np.array_equal(np.asarray(im), src)


def test_gray_output_uses_channel_mean() -> None:
    rgb = np.zeros((1, 2, 3), np.float32)
    rgb[0, 0] = (0.0, 0.0, 1.0)  # mean 1/3 -> 85; ITU-R 601 luma would give 29
    rgb[0, 1] = (0.2, 0.4, 0.6)
    data = mio.encode_image(rgb, info_for(mode="L", grayscale=True), OutputFormat.PNG)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L" and np.asarray(im).tolist() == [[85, 102]]


def test_palette_with_transparency_becomes_rgba() -> None:
    src = np.array([[0, 1], [2, 1]], np.uint8)
    image = Image.fromarray(src, mode="L").convert("P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    image.info["transparency"] = 1
    decoded = mio.read_image(pil_bytes(image, "PNG", transparency=1))
    assert decoded.info.mode == "P" and decoded.info.has_alpha and not decoded.info.grayscale
    assert decoded.alpha is not None and decoded.alpha.tolist() == [[255, 0], [255, 0]]
    assert as_u8(decoded)[0, 0].tolist() == [255, 0, 0] and as_u8(decoded)[1, 0].tolist() == [
        0,
        0,
        255,
    ]
    with Image.open(
        io.BytesIO(
            mio.encode_image(decoded.rgb, decoded.info, OutputFormat.SAME, alpha=decoded.alpha)
        )
    ) as im:
        assert im.mode == "RGBA"


def test_palette_without_transparency_becomes_rgb() -> None:
    image = Image.fromarray(rand8(8, 8)).convert("P")
    decoded = mio.read_image(pil_bytes(image, "GIF"))
    assert decoded.info.mode == "P" and decoded.alpha is None and not decoded.info.grayscale
    assert np.array_equal(as_u8(decoded), np.asarray(image.convert("RGB")))


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.fromarray(rand8(16, 16, 4), mode="CMYK")
    decoded = mio.read_image(pil_bytes(cmyk, "JPEG", quality=100))
    assert decoded.info.mode == "CMYK" and not decoded.info.grayscale and decoded.alpha is None
    expected = np.asarray(
        Image.open(io.BytesIO(pil_bytes(cmyk, "JPEG", quality=100))).convert("RGB")
    )
    assert np.array_equal(as_u8(decoded), expected)
    assert any("CMYK" in note for note in decoded.info.notes)
    with Image.open(
        io.BytesIO(mio.encode_image(decoded.rgb, decoded.info, OutputFormat.SAME))
    ) as im:
        assert im.format == "JPEG" and im.mode == "RGB"


def test_cmyk_with_unusable_profile_falls_back_and_drops_it() -> None:
    bogus = bytearray(srgb_icc())
    bogus[16:20] = b"CMYK"  # claims CMYK, but its tables are RGB: LittleCMS refuses it
    cmyk = Image.fromarray(rand8(8, 8, 4), mode="CMYK")
    decoded = mio.read_image(pil_bytes(cmyk, "JPEG", icc_profile=bytes(bogus)))
    assert decoded.info.icc_profile is None  # a CMYK profile would be wrong on RGB pixels
    assert any("without colour management" in n for n in decoded.info.notes)


def test_la_1bit_and_rgb_colour_key() -> None:
    la = rand8(6, 7, 2)
    decoded = mio.read_image(pil_bytes(Image.fromarray(la), "PNG"))
    assert decoded.info.grayscale and decoded.alpha is not None
    assert np.array_equal(decoded.alpha, la[..., 1]) and np.array_equal(
        as_u8(decoded)[..., 0], la[..., 0]
    )

    bits = Image.fromarray(rand8(6, 7, 1) > 127)
    decoded = mio.read_image(pil_bytes(bits, "PNG"))
    assert decoded.info.mode == "1" and decoded.info.grayscale and decoded.info.bit_depth == 8
    assert set(np.unique(as_u8(decoded))) <= {0, 255}

    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    decoded = mio.read_image(pil_bytes(Image.fromarray(rgb), "PNG", transparency=(10, 20, 30)))
    assert decoded.alpha is not None and decoded.alpha.tolist() == [[0, 255], [255, 255]]


def test_integer_and_float_modes() -> None:
    pgm = b"P5 4 3 65535\n" + (np.arange(12, dtype=np.uint16) * 5000).astype(">u2").tobytes()
    decoded = mio.read_image(pgm)
    assert decoded.info.mode == "I" and decoded.info.bit_depth == 16 and decoded.info.grayscale
    assert as_u16(decoded)[..., 0].ravel().tolist() == [i * 5000 for i in range(12)]

    wide = Image.fromarray(np.array([[0, 70000]], dtype=np.int32))
    with pytest.raises(InputError, match=r"outside 0\.\.65535"):
        mio.read_image(pil_bytes(wide, "TIFF"), name="wide.tif")

    flt = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    decoded = mio.read_image(pil_bytes(Image.fromarray(flt), "TIFF"))
    assert decoded.info.mode == "F" and decoded.info.bit_depth == 16
    assert np.allclose(decoded.rgb[..., 0], flt, atol=1 / 65535)

    hdr = Image.fromarray(np.array([[0.0, 4.0]], np.float32))
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        mio.read_image(pil_bytes(hdr, "TIFF"))


def test_animated_gif_takes_first_frame_and_says_so() -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 128, 255)]
    data = pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = mio.read_image(data)
    assert decoded.info.frame_count == 3
    assert any("only the first" in note for note in decoded.info.notes)
    assert as_u8(decoded).max() == 0


def test_lossless_webp_source_is_written_lossless() -> None:
    src = rand8(16, 16)
    decoded = mio.read_image(pil_bytes(Image.fromarray(src), "WEBP", lossless=True))
    assert decoded.info.lossless
    data = mio.encode_image(decoded.rgb, decoded.info, OutputFormat.SAME)
    assert b"VP8L" in data[:64]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), src)
    lossy = mio.read_image(pil_bytes(Image.fromarray(src), "WEBP", quality=80))
    assert not lossy.info.lossless


# --------------------------------------------------------------------------- orientation


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


def test_decode_warnings_are_taken_only_from_the_decoding_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warning another thread raises mid-decode reaches its handler, not the image's notes."""
    jpeg = pil_bytes(
        Image.fromarray(rand8(8, 8)), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"
    )
    real_decode = mio_decode.open_and_decode
    decoding, go_on = threading.Event(), threading.Event()

    def paused_decode(*args: Any) -> DecodedImage:
        decoded = real_decode(*args)  # Pillow warns "Corrupt EXIF data" here
        warnings.warn("decoder says hi", UserWarning, stacklevel=1)
        decoding.set()
        assert go_on.wait(10)
        return decoded

    monkeypatch.setattr(mio_decode, "open_and_decode", paused_decode)
    before = (warnings.warn, warnings.showwarning)
    box: list[DecodedImage] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        worker = threading.Thread(target=lambda: box.append(mio.read_image(jpeg)))
        worker.start()
        try:
            assert decoding.wait(10)
            warnings.warn("main thread says hi", UserWarning, stacklevel=1)
        finally:
            go_on.set()
            worker.join(10)
    (decoded,) = box
    notes = decoded.info.notes
    # Pillow's "Corrupt EXIF data" is folded into our own note (one warning per problem)
    assert any("EXIF data is malformed" in n for n in notes)
    assert any("decoder says hi" in n for n in notes)
    assert not any("main thread" in n for n in notes)
    assert [str(w.message) for w in seen] == ["main thread says hi"]
    assert seen[0].filename == __file__  # attributed to its caller, not to the hook
    assert (warnings.warn, warnings.showwarning) == before  # the hooks are gone again


# --------------------------------------------------------------------------- ICC and DPI


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


def test_tiff_writer_survives_exif_pillow_cannot_serialise(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(exif: bytes, ifd: Any) -> None:
        ifd[0x9999] = object()  # what an unserialisable vendor tag looks like to Pillow

    monkeypatch.setattr(mio_encode, "exif_into_ifd", broken)
    data = mio.encode_image(np.zeros((3, 3, 3), np.float32), info_for(exif=make_exif()), "tiff")  # type: ignore[arg-type]
    assert Image.open(io.BytesIO(data)).size == (3, 3)


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


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("source", "kw", "expected"),
    [
        ("JPEG", {}, OutputFormat.JPEG),
        ("PNG", {}, OutputFormat.PNG),
        ("WEBP", {}, OutputFormat.WEBP),
        ("TIFF", {}, OutputFormat.TIFF),
        ("TIFF", {"bit_depth": 16, "has_alpha": True}, OutputFormat.TIFF),
        ("BMP", {}, OutputFormat.PNG),
        ("GIF", {}, OutputFormat.PNG),
        ("PPM", {"bit_depth": 16}, OutputFormat.PNG),
        (None, {}, OutputFormat.PNG),
        ("JPEG", {"has_alpha": True}, OutputFormat.PNG),  # cannot happen from a file; rule holds
        ("WEBP", {"bit_depth": 16}, OutputFormat.PNG),
    ],
)
def test_resolve_same(source: str | None, kw: dict[str, Any], expected: OutputFormat) -> None:
    info = info_for(format=source, **kw)
    assert mio.resolve_format(OutputFormat.SAME, info) is expected
    assert mio.resolve_format(OutputFormat.WEBP, info) is OutputFormat.WEBP  # explicit wins


def test_mpo_camera_jpeg_reads_as_jpeg() -> None:
    frames = [Image.fromarray(rand8(8, 8)), Image.fromarray(rand8(8, 8))]
    data = pil_bytes(frames[0], "MPO", save_all=True, append_images=frames[1:])
    decoded = mio.read_image(data)
    assert (
        decoded.info.format == "JPEG" and decoded.info.frame_count == 1 and not decoded.info.notes
    )
    assert mio.resolve_format(OutputFormat.SAME, decoded.info) is OutputFormat.JPEG


def _predict_cases() -> dict[str, bytes]:
    gray = Image.fromarray(rand8(6, 5, 1))
    rgba = Image.fromarray(rand8(6, 5, 4))
    frames = [Image.fromarray(rand8(8, 8)), Image.fromarray(rand8(8, 8))]
    return {
        "gray.jpg": pil_bytes(gray, "JPEG"),
        "camera.jpg": pil_bytes(frames[0], "MPO", save_all=True, append_images=frames[1:]),
        "deep.png": raw_png16(rand16(6, 5, 2)),
        "rgba.webp": pil_bytes(rgba, "WEBP", lossless=True),
        "deep.tif": cv2_bytes(rand16(6, 5, 4), ".tiff"),
        "big.tif": pil_bytes(rgba, "TIFF", big_tiff=True),
        "x.bmp": pil_bytes(gray, "BMP"),
        "x.gif": pil_bytes(gray, "GIF"),
        "a_png.jpg": pil_bytes(rgba, "PNG"),  # the content decides, not the name
    }


@pytest.mark.parametrize("name", list(_predict_cases()))
def test_predicted_format_is_the_one_chosen_after_decoding(tmp_path: Path, name: str) -> None:
    """Batch runs skip existing outputs before decoding: the prediction must not differ."""
    path = tmp_path / name
    path.write_bytes(_predict_cases()[name])
    decoded = mio.read_image(path)
    chosen = mio.resolve_format(OutputFormat.SAME, decoded.info)
    assert mio.predict_format(path, OutputFormat.SAME) is chosen
    assert mio.predict_format(path, OutputFormat.WEBP) is OutputFormat.WEBP  # explicit wins


def test_predicted_format_of_an_unreadable_file_is_unknown(tmp_path: Path) -> None:
    assert mio.predict_format(tmp_path / "missing.png", OutputFormat.SAME) is None
    assert mio.predict_format(tmp_path, OutputFormat.SAME) is None  # a folder
    assert mio.predict_format(tmp_path / "missing.png", OutputFormat.TIFF) is OutputFormat.TIFF


def test_extensions_and_suffixes() -> None:
    assert [mio.extension_for(f) for f in ALL_FORMATS] == [".jpg", ".png", ".webp", ".tif"]
    with pytest.raises(ValueError, match="SAME"):
        mio.extension_for(OutputFormat.SAME)
    assert mio.format_from_suffix("a/b.JPEG") is OutputFormat.JPEG
    assert mio.format_from_suffix(Path("x.tiff")) is OutputFormat.TIFF
    assert mio.format_from_suffix("x.tif") is OutputFormat.TIFF
    assert mio.format_from_suffix("x.webp") is OutputFormat.WEBP
    assert mio.format_from_suffix("x.bmp") is None and mio.format_from_suffix("x") is None
    for fmt in ALL_FORMATS:
        assert mio.format_from_suffix("f" + mio.extension_for(fmt)) is fmt


def test_explicit_jpeg_from_16bit_rgba_reduces_depth_and_flattens_on_white() -> None:
    src = rand16(6, 6, 4)
    src[0, 0, 3] = 0  # fully transparent -> white
    src[0, 1, 3] = 65535  # opaque -> its own colour
    decoded = mio.read_image(cv2_bytes(src, ".png"))
    notes = mio.output_notes(decoded.info, OutputFormat.JPEG)
    assert any("8" in n for n in notes) and any("white" in n for n in notes)
    data = mio.encode_image(decoded.rgb, decoded.info, OutputFormat.JPEG, alpha=decoded.alpha)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        px = np.asarray(im)
    assert close(tuple(px[0, 0]), (255, 255, 255), tol=40)
    assert mio.output_notes(decoded.info, OutputFormat.PNG) == ()


def test_jpeg_quality_and_chroma_subsampling() -> None:
    rgb = np.asarray(RNG.random((32, 32, 3)), np.float32)
    info = info_for(format="JPEG")
    hi = Image.open(io.BytesIO(mio.encode_image(rgb, info, OutputFormat.JPEG)))
    lo = Image.open(io.BytesIO(mio.encode_image(rgb, info, OutputFormat.JPEG, jpeg_quality=80)))
    assert isinstance(hi, JpegImagePlugin.JpegImageFile) and isinstance(
        lo, JpegImagePlugin.JpegImageFile
    )
    assert JpegImagePlugin.get_sampling(hi) == 0  # 4:4:4
    assert JpegImagePlugin.get_sampling(lo) == 2  # 4:2:0
    with pytest.raises(UsageError, match="quality"):
        mio.encode_image(rgb, info, OutputFormat.JPEG, jpeg_quality=0)


def test_encode_to_bytes_for_stdout_and_size_limits() -> None:
    rgb = np.asarray(RNG.random((4, 5, 3)), np.float32)
    assert mio.encode_image(rgb, info_for(), OutputFormat.JPEG)[:2] == b"\xff\xd8"
    assert mio.encode_image(rgb, info_for(), OutputFormat.PNG)[:8] == b"\x89PNG\r\n\x1a\n"
    too_wide = np.zeros((1, 16384, 3), np.float32)
    with pytest.raises(OutputError, match="WebP cannot store"):
        mio.encode_image(too_wide, info_for(), OutputFormat.WEBP)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        mio.encode_image(np.zeros((4, 4), np.float32), info_for(), OutputFormat.PNG)


def test_to_uint8_rounds_clips_and_zeroes_nan() -> None:
    x = np.array([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 2.0, np.nan, np.inf], np.float32)
    assert mio.to_uint8(x).tolist() == [0, 0, 0, 2, 128, 255, 255, 0, 255]  # half to even
    assert mio.to_uint16(np.array([0.5, 1.0], np.float32)).tolist() == [32768, 65535]


def test_unit_rgb_rebuilds_decoded_floats_bit_for_bit_from_their_integers() -> None:
    """What a runner that ships compact pixels relies on (exhaustive over every value)."""
    for depth, dtype in ((8, np.uint8), (16, np.uint16)):
        values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
        color = np.stack([values, values[::-1], values], axis=1)[:, None, :]  # (N, 1, 3)
        rgb = mio.unit_rgb(color, depth)
        assert rgb.dtype == np.float32 and rgb.shape == (values.size, 1, 3)
        quantize = mio.to_uint16 if depth == 16 else mio.to_uint8
        assert np.array_equal(quantize(rgb), color)  # the integers come back exactly
        gray = mio.unit_rgb(values[:, None], depth)
        assert np.array_equal(gray, rgb[..., :1].repeat(3, axis=2))
    for data in (
        cv2_bytes(rand16(9, 7, 3), ".png"),
        pil_bytes(Image.fromarray(rand8(9, 7)), "PNG"),
        pil_bytes(Image.fromarray(rand8(9, 7, 1)), "PNG"),
        pil_bytes(Image.fromarray(rand16(9, 7, 1)), "PNG"),
    ):
        decoded = mio.read_image(data)
        quantize = mio.to_uint16 if decoded.info.bit_depth == 16 else mio.to_uint8
        ints = quantize(decoded.rgb)
        ints = ints[..., 0] if decoded.info.grayscale else ints
        rebuilt = mio.unit_rgb(ints, decoded.info.bit_depth)
        assert rebuilt.tobytes() == decoded.rgb.tobytes()


# --------------------------------------------------------------------------- bad input


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


BAD_INPUTS: dict[str, Callable[[], bytes]] = {
    "truncated.jpg": lambda: _truncated(pil_bytes(Image.fromarray(rand8(64, 64)), "JPEG")),
    "truncated.png": lambda: _truncated(pil_bytes(Image.fromarray(rand8(64, 64)), "PNG")),
    "truncated16.png": lambda: _truncated(cv2_bytes(rand16(64, 64), ".png")),
    "random.jpg": lambda: RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "empty.png": lambda: b"",
    "notes.txt": lambda: b"just some text, not a picture\n",
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_files_raise_input_error_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"my {name}"
    path.write_bytes(BAD_INPUTS[name]())
    with pytest.raises(InputError) as caught:
        mio.read_image(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    with pytest.raises(InputError, match="<stdin>"):
        mio.read_image(path.read_bytes() or b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(pil_bytes(Image.new("L", (100, 100)), "PNG"))
    with pytest.raises(InputError, match=r"bomb\.png: 100x100 .*--max-pixels"):
        mio.read_image(path, max_pixels=9_999)
    assert mio.read_image(path, max_pixels=10_000).width == 100
    assert mio.DEFAULT_MAX_PIXELS == 16384 * 16384


def test_our_limit_replaces_pillows_global_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow would call 20x20 a bomb
    data = pil_bytes(Image.new("RGB", (20, 20)), "PNG")
    assert mio.read_image(data, max_pixels=None).width == 20
    assert Image.MAX_IMAGE_PIXELS == 10  # restored


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        mio.read_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="folder"):
        mio.read_image(tmp_path)


def test_eps_is_not_handed_to_ghostscript() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(InputError, match="not an image"):
        mio.read_image(eps, name="evil.eps")


# --------------------------------------------------------------------------- writing


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_non_ascii_path_with_spaces(tmp_path: Path) -> None:
    src = rand8(9, 9)
    path = tmp_path / "фото с дождём ☔.png"
    path.write_bytes(pil_bytes(Image.fromarray(src), "PNG"))
    decoded = mio.read_image(path)
    out = tmp_path / "фото с дождём ☔ (чистое).png"
    mio.write_image(out, decoded.rgb, decoded.info, OutputFormat.SAME)
    assert np.array_equal(as_u8(mio.read_image(out)), src)


def test_read_from_bytes_matches_read_from_path(tmp_path: Path) -> None:
    data = pil_bytes(Image.fromarray(rand8(7, 8)), "JPEG", exif=make_exif(6), dpi=(72, 72))
    (tmp_path / "a.jpg").write_bytes(data)
    from_path, from_bytes = mio.read_image(tmp_path / "a.jpg"), mio.read_image(data)
    assert np.array_equal(from_path.rgb, from_bytes.rgb)
    assert from_path.info == from_bytes.info


def test_write_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    out.chmod(0o640)
    rgb = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        mio.write_image(out, rgb, info_for(), OutputFormat.PNG)
    assert out.read_bytes() == b"precious" and _listing(tmp_path) == ["out.png"]
    mio.write_image(out, rgb, info_for(), OutputFormat.PNG, overwrite=True)
    assert out.read_bytes()[:4] == b"\x89PNG" and _listing(tmp_path) == ["out.png"]
    assert out.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions are kept
    with pytest.raises(OutputError, match="folder"):
        mio.write_image(tmp_path, rgb, info_for(), OutputFormat.PNG, overwrite=True)


def test_new_file_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        mio.write_image(
            tmp_path / "o.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    finally:
        os.umask(old)
    assert (tmp_path / "o.png").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600


def test_temp_file_is_hidden_in_target_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.append(_listing(tmp_path))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    mio.write_image(
        tmp_path / "out.jpg", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.JPEG
    )
    tmp_names = [n for n in seen[0] if n != "out.jpg"]
    assert (
        len(tmp_names) == 1
        and tmp_names[0].startswith(".out.jpg.")
        and tmp_names[0].endswith(".tmp")
    )
    assert _listing(tmp_path) == ["out.jpg"]


def test_failure_while_encoding_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(mio_encode, "encode_pixels", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        mio.write_image(
            tmp_path / "out.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyboardInterrupt(), KeyboardInterrupt),
        (OSError(errno.ENOSPC, "No space left on device"), OutputError),
        (OSError(errno.EIO, "I/O error"), OutputError),
    ],
)
def test_failure_while_writing_removes_temp_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    expected: type[BaseException],
) -> None:
    def fail(fd: int) -> None:
        raise exc

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(expected) as caught:
        mio.write_image(
            tmp_path / "out.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    assert _listing(tmp_path) == []
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        assert "disk space" in str(caught.value)


def test_unwritable_folder_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        mio.write_image(
            tmp_path / "missing" / "o.png",
            np.zeros((2, 2, 3), np.float32),
            info_for(),
            OutputFormat.PNG,
        )

    real_open = os.open

    def deny(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(OutputError, match="permission denied"):
        mio.write_image(
            tmp_path / "o.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("how", ["link", "no-hard-links", "overwrite"])
def test_temp_file_deleted_by_someone_else_is_reported_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Not "the folder does not exist": the folder is there, the temp file is not."""
    real_fsync = os.fsync

    def sweep_then_fsync(fd: int) -> None:  # the first fsync is the temp file's, before linking
        for tmp in tmp_path.glob(".o.png.*.tmp"):
            tmp.unlink()
        real_fsync(fd)

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fsync", sweep_then_fsync)
    if how == "no-hard-links":
        monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(OutputError, match=r"temporary file .* was deleted") as caught:
        mio.write_image(
            tmp_path / "o.png",
            np.zeros((2, 2, 3), np.float32),
            info_for(),
            OutputFormat.PNG,
            overwrite=how == "overwrite",
        )
    assert "does not exist" not in str(caught.value)
    assert _listing(tmp_path) == []


def test_temp_file_deleted_after_linking_is_still_a_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link

    def link_then_sweep(src: Any, dst: Any) -> None:
        real_link(src, dst)
        Path(src).unlink()

    monkeypatch.setattr(os, "link", link_then_sweep)
    mio.write_image(
        tmp_path / "o.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
    )
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG" and _listing(tmp_path) == ["o.png"]


def test_write_without_hard_links_falls_back_to_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "o.png"
    mio.write_image(out, np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG)
    assert out.read_bytes()[:4] == b"\x89PNG" and _listing(tmp_path) == ["o.png"]
    with pytest.raises(OutputExistsError):
        mio.write_image(out, np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG)
    assert _listing(tmp_path) == ["o.png"]


# --------------------------------------------------------------------------- audit cases


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_rows(
    width: int, height: int, rows: int, *, depth: int = 8, interlace: int = 0
) -> bytes:
    """An RGB PNG whose complete zlib stream holds `rows` rows of the `height` it declares
    (for interlaced files, that many bytes' worth of the full Adam7 data)."""
    row_bytes = width * 3 * depth // 8
    if interlace:
        passes = (
            (0, 8, 0, 8),
            (0, 8, 4, 8),
            (4, 8, 0, 4),
            (0, 4, 2, 4),
            (2, 4, 0, 2),
            (0, 2, 1, 2),
            (1, 2, 0, 1),
        )
        full = b"".join(
            b"".join(b"\x00" + bytes((w * 3 * depth // 8) * [7]) for _ in range(h))
            for y0, dy, x0, dx in passes
            if (w := -(-(width - x0) // dx)) > 0 and (h := -(-(height - y0) // dy)) > 0
        )
        raw = full[: len(full) * rows // height]
    else:
        raw = b"".join(
            b"\x00" + bytes((i * 7 + j) % 251 for j in range(row_bytes)) for i in range(rows)
        )
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("depth", [8, 16], ids=["pillow-path", "opencv-path"])
@pytest.mark.parametrize("interlace", [0, 1], ids=["progressive", "adam7"])
def test_png_missing_rows_is_refused(depth: int, interlace: int) -> None:
    """A complete zlib stream that stops at half the rows: Pillow would fill black rows."""
    with pytest.raises(InputError, match=r"x\.png: truncated PNG"):
        mio.read_image(png_with_rows(40, 20, 10, depth=depth, interlace=interlace), name="x.png")
    whole = mio.read_image(png_with_rows(40, 20, 20, depth=depth, interlace=interlace))
    assert (whole.width, whole.height, whole.info.bit_depth) == (40, 20, depth)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_complete_pngs_of_every_layout_pass_the_row_check(mode: str) -> None:
    image = Image.fromarray(rand8(13, 17, 4)).convert(mode)
    assert mio.read_image(pil_bytes(image, "PNG")).width == 17


def test_pixel_limit_message_names_small_counts_exactly() -> None:
    with pytest.raises(InputError) as caught:
        mio.read_image(pil_bytes(Image.fromarray(rand8(24, 24)), "PNG"), max_pixels=100, name="a")
    assert str(caught.value).startswith("a: 24x24 is 576 pixels, above the limit of 100 pixels;")


def test_corrupt_exif_gives_one_note() -> None:
    jpeg = pil_bytes(
        Image.fromarray(rand8(8, 8)), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"
    )
    notes = [n for n in mio.read_image(jpeg).info.notes if "EXIF" in n]
    assert notes == ["the EXIF data is malformed and was not copied"]


# --------------------------------------------------------------------------- issue 23


@pytest.mark.parametrize("content", ["png", "nothing"])
def test_a_fifo_is_read_as_a_stream(tmp_path: Path, content: str) -> None:
    """`mprnet derain <(cat a.png)` or a named pipe: was "file is empty" (size 0)."""
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as fh:
            fh.write(buffer.getvalue() if content == "png" else b"")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        if content == "png":
            decoded = mio.read_image(fifo)
            assert (decoded.width, decoded.height) == (6, 4)
            np.testing.assert_array_equal(np.rint(decoded.rgb * 255).astype(np.uint8), pixels)
        else:
            with pytest.raises(InputError, match="input is empty"):
                mio.read_image(fifo)
    finally:
        writer.join(timeout=30)


def test_a_stream_is_read_up_to_a_limit() -> None:
    with pytest.raises(InputError, match="from a pipe or device; save it to a file"):
        mio_decode._read_bounded(io.BytesIO(b"x" * 11), "dev", limit=10)
    assert mio_decode._read_bounded(io.BytesIO(b"x" * 10), "dev", limit=10) == b"x" * 10
