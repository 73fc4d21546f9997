"""Tests for mprnet_cli.imageio.formats: the one table of output formats (each fact spelled
there only), what `same` resolves to before and after decoding, and the extensions we write."""

from __future__ import annotations

import ast
import dataclasses
import io
import mimetypes
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mprnet_cli import imageio as mio
from mprnet_cli.errors import UsageError
from mprnet_cli.imageio import OutputFormat, formats
from mprnet_cli.imageio import encode as mio_encode
from tests.conftest import REPO
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


# --------------------------------------------------------------------------- one table


def _spellings() -> set[str]:
    """Every way the table writes an output format: extensions (with and without the dot),
    --format values and aliases, names in messages, Pillow's names, media types."""
    found: set[str] = set()
    for fmt in formats.FORMATS:
        spec = fmt.spec
        found.update(spec.extensions, (e.removeprefix(".") for e in spec.extensions))
        found.update([spec.choice, *spec.aliases, spec.name, *spec.pillow, spec.media_type])
    return {word.lower() for word in found}


def _spelled(source: str, spellings: set[str]) -> list[tuple[int, str]]:
    """(line, literal) of each string literal in `source` that spells an output format, as
    a word of its own ("out.png", "jpeg", "image/webp"; not "--jpeg-quality"). Docstrings
    are prose for readers and do not count."""
    alternatives = "|".join(sorted(map(re.escape, spellings), key=len, reverse=True))
    word = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and word.search(node.value)
    ]


def test_the_scan_finds_spellings_and_skips_docstrings() -> None:
    source = (
        '"""Writes .png files."""\n'
        'A = {"jpeg": "jpg"}\n'
        'B = f"out{x}.TIF"\n'
        'C = "--jpeg-quality"\n'
        'D = "image/webp"\n'
        'def f():\n    """PNG here is prose."""\n    return "Saved as WebP"\n'
    )
    hits = _spelled(source, _spellings())
    assert sorted(line for line, _ in hits) == [2, 2, 3, 5, 8]


def test_no_other_module_spells_an_output_format() -> None:
    """Issue 22's bar: a format's extension (and every other spelling) lives in the table."""
    spellings = _spellings()
    table = REPO / "mprnet_cli" / "imageio" / "formats.py"
    found = [
        f"{path.relative_to(REPO)}:{line}: {literal!r}"
        for path in sorted((REPO / "mprnet_cli").rglob("*.py"))
        if path != table
        for line, literal in _spelled(path.read_text(encoding="utf-8"), spellings)
    ]
    assert not found, "spell formats through mprnet_cli.imageio.formats:\n" + "\n".join(found)


def test_each_spelling_names_one_format() -> None:
    seen: dict[str, OutputFormat] = {}
    for fmt in formats.FORMATS:
        spec = fmt.spec
        assert spec.choice == fmt.value and spec.extension == spec.extensions[0]
        for word in {spec.choice, *spec.aliases, *spec.extensions, *spec.pillow}:
            assert seen.setdefault(word.lower(), fmt) is fmt, f"{word} names two formats"
        assert all(e == e.lower() and e.startswith(".") for e in spec.extensions)
        assert set(spec.extensions) <= mio.IMAGE_EXTENSIONS  # we read what we write
    assert tuple(f for f in OutputFormat if f is not OutputFormat.SAME) == formats.FORMATS


def test_parse_format_takes_every_spelling_and_names_them_when_wrong() -> None:
    for fmt in formats.FORMATS:
        for word in (fmt.value, *fmt.spec.aliases):
            assert formats.parse_format(f" {word.upper()} ") is fmt
    assert formats.parse_format("same") is OutputFormat.SAME
    with pytest.raises(UsageError) as caught:
        formats.parse_format("bmp")
    assert str(caught.value) == "expected png, jpg, webp, tiff or same, got 'bmp'"


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_every_format_is_written_as_its_table_row_says(fmt: OutputFormat) -> None:
    """Its encoder writes its container: magic bytes, Pillow's name, `same` keeps it, and the
    media type is the one the standard library knows for its extensions."""
    spec = fmt.spec
    rgb = np.linspace(0, 1, 2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    data = mio.encode_image(rgb, info_for(format=spec.pillow[0]), fmt)
    assert formats.encoder_of(fmt) is getattr(mio_encode, spec.encoder.partition(":")[2])
    assert formats.container_of(data[:16]) is fmt
    with Image.open(io.BytesIO(data)) as im:
        assert im.format in spec.pillow and im.size == (3, 2)
    decoded = mio.read_image(data)
    assert mio.resolve_format(OutputFormat.SAME, decoded.info) is fmt
    assert mio.predict_format(lambda n: data[:n], OutputFormat.SAME) is fmt
    for ext in spec.extensions:
        assert mio.format_from_suffix(f"photo{ext.upper()}") is fmt
        guessed, _ = mimetypes.guess_type(f"photo{ext}", strict=False)
        assert guessed in (None, spec.media_type)  # None: this system's table lacks it


def test_the_table_drives_what_the_encoder_keeps() -> None:
    """A format that held less (here: PNG without ICC, EXIF, DPI or 16 bits) loses exactly
    that, with a note each: the encoder reads the table, not its own list of formats."""
    info = info_for(
        bit_depth=16, icc_profile=b"x" * 16 + b"RGB " + b"x" * 108, exif=b"E", dpi=(300.0, 300.0)
    )
    full = mio_encode._plan_for(info, OutputFormat.PNG, OutputFormat.PNG.spec, False)
    assert (full.depth, full.icc, full.exif, full.dpi, full.notes) == (
        16,
        info.icc_profile,
        b"E",
        (300.0, 300.0),
        (),
    )
    less = dataclasses.replace(OutputFormat.PNG.spec, depths=(8,), icc=False, exif=False, dpi=False)
    plan = mio_encode._plan_for(info, OutputFormat.PNG, less, False)
    assert (plan.depth, plan.icc, plan.exif, plan.dpi) == (8, None, None, None)
    assert plan.notes == (
        "PNG holds only 8 bits per channel: 16-bit depth reduced to 8",
        "PNG cannot embed an ICC profile: it was dropped",
        "PNG cannot embed EXIF: it was dropped",
    )


def test_help_and_error_texts_list_every_format() -> None:
    for fmt in formats.FORMATS:
        assert fmt.value in formats.FORMAT_HELP
        assert fmt.spec.extension in formats.OUTPUT_EXTENSIONS_TEXT
        assert (fmt.spec.name in formats.LOSSY_NAMES) is fmt.spec.lossy
    assert formats.FORMAT_HELP.startswith("png, jpg, webp, tiff, or same:")
    assert formats.OUTPUT_EXTENSIONS_TEXT == ".png, .jpg, .webp or .tif"
    assert formats.LOSSY_NAMES == "JPEG and WebP"


def test_the_reference_page_lists_each_format_as_the_table_does() -> None:
    page = (REPO / "docs" / "formats-and-files.md").read_text(encoding="utf-8")
    for fmt in formats.FORMATS:
        row = re.search(rf"^\| {fmt.spec.name} \| `([^`]*)` \|", page, re.MULTILINE)
        assert row is not None, f"docs/formats-and-files.md has no row for {fmt.spec.name}"
        assert tuple(row.group(1).split()) == fmt.spec.extensions


def test_the_table_loads_neither_numpy_nor_pillow() -> None:
    """`mprnet --help` and `choices` read the table; `imageio` loads its modules on use."""
    code = (
        "import sys, mprnet_cli.choices, mprnet_cli.imageio.formats as f, mprnet_cli.imageio as m\n"
        "light = sorted({'numpy', 'PIL', 'cv2'} & set(sys.modules))\n"
        "m.read_image\n"
        "print(light, 'PIL' in sys.modules, m.OutputFormat is f.OutputFormat)\n"
        "try:\n    m.nothing_here\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.splitlines() == [
        "[] True True",
        "module 'mprnet_cli.imageio' has no attribute 'nothing_here'",
    ]
