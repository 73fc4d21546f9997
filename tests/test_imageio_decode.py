"""Tests for mprnet_cli.imageio.decode: modes, depths, bad input, size limits, streams.

Independent oracles where possible: Pillow reads what we write, OpenCV reads/writes the
16-bit colour files Pillow cannot represent, and a tiny PNG writer (`tests.helpers.raw_png16`)
builds the rest.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mprnet_cli import imageio as mio
from mprnet_cli.errors import InputError
from mprnet_cli.imageio import OutputFormat
from mprnet_cli.imageio import decode as mio_decode
from tests.helpers import as_u8, as_u16, cv2_bytes, make_exif, pil_bytes, rand8, rand16, srgb_icc

RNG = np.random.default_rng(1234)


def test_16bit_ppm_is_read_at_16_bits_and_scaled() -> None:
    src = RNG.integers(0, 4096, (9, 11, 3), dtype=np.uint16)
    ppm = b"P6\n# dcraw\n11 9\n4095\n" + src.astype(">u2").tobytes()
    decoded = mio.read_image(ppm)
    assert decoded.info.bit_depth == 16 and decoded.info.format == "PPM"
    expected = np.rint(src * (65535 / 4095)).astype(np.uint16)
    assert np.array_equal(as_u16(decoded), expected)
    assert mio.resolve_format(OutputFormat.SAME, decoded.info) is OutputFormat.PNG


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


def test_mpo_camera_jpeg_reads_as_jpeg() -> None:
    frames = [Image.fromarray(rand8(8, 8)), Image.fromarray(rand8(8, 8))]
    data = pil_bytes(frames[0], "MPO", save_all=True, append_images=frames[1:])
    decoded = mio.read_image(data)
    assert (
        decoded.info.format == "JPEG" and decoded.info.frame_count == 1 and not decoded.info.notes
    )
    assert mio.resolve_format(OutputFormat.SAME, decoded.info) is OutputFormat.JPEG


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
