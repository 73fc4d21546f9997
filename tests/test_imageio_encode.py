"""Tests for mprnet_cli.imageio.encode: round trips through our writers, what each format
receives, quality and size limits.

Independent oracles where possible: Pillow reads what we write, OpenCV reads/writes the
16-bit colour files Pillow cannot represent, and a tiny PNG writer (`tests.helpers.raw_png16`)
builds the rest.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, JpegImagePlugin

from mprnet_cli import imageio as mio
from mprnet_cli.errors import OutputError, UsageError
from mprnet_cli.imageio import OutputFormat
from mprnet_cli.imageio import encode as mio_encode
from tests.helpers import (
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
)

RNG = np.random.default_rng(1234)


FEW_EXAMPLES = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def cv2_read(data: bytes) -> npt.NDArray[Any]:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert arr is not None
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    return np.asarray(arr)


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


def test_lossless_webp_source_is_written_lossless() -> None:
    src = rand8(16, 16)
    decoded = mio.read_image(pil_bytes(Image.fromarray(src), "WEBP", lossless=True))
    assert decoded.info.lossless
    data = mio.encode_image(decoded.rgb, decoded.info, OutputFormat.SAME)
    assert b"VP8L" in data[:64]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), src)
    lossy = mio.read_image(pil_bytes(Image.fromarray(src), "WEBP", quality=80))
    assert not lossy.info.lossless


def test_tiff_writer_survives_exif_pillow_cannot_serialise(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(exif: bytes, ifd: Any) -> None:
        ifd[0x9999] = object()  # what an unserialisable vendor tag looks like to Pillow

    monkeypatch.setattr(mio_encode, "exif_into_ifd", broken)
    data = mio.encode_image(np.zeros((3, 3, 3), np.float32), info_for(exif=make_exif()), "tiff")  # type: ignore[arg-type]
    assert Image.open(io.BytesIO(data)).size == (3, 3)


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
