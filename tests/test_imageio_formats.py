"""Tests for mprnet_cli.imageio.formats: what `same` resolves to, before and after decoding,
and the extensions we write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mprnet_cli import imageio as mio
from mprnet_cli.imageio import OutputFormat
from tests.helpers import ALL_FORMATS, cv2_bytes, info_for, pil_bytes, rand8, rand16, raw_png16


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
