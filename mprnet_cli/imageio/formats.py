"""The one table of output formats, the extensions we read, and which format `same` means.

Every fact about an output format is declared once, in its `OutputFormat` member's
`FormatSpec` below: the `--format` spellings, file extensions (canonical first), magic bytes,
media type, what it can hold (bit depths, gray, alpha, ICC, EXIF, DPI, largest side) and
the function that encodes it. The CLI's help and errors, output naming, `same`, the
encoder's notes and the HTTP media types are all generated from it, so a new format is one
`FormatSpec` here plus its encoder function (`tests/test_imageio_formats.py` fails if an
output format's extension is spelled in any other module of `mprnet_cli`).

* `OutputFormat.SAME` (`resolve_format`): a JPEG (and MPO), PNG, WebP or TIFF input keeps its
  format when that format can hold the result (JPEG: 8-bit, no alpha - always true for a JPEG
  input; WebP: 8-bit colour - always true for a WebP input); every other format (BMP, GIF,
  PPM, ICO, JPEG 2000, AVIF, ...) -> PNG, which is lossless and holds every depth, gray,
  alpha and metadata combination we produce.
* Because a file's own container always holds what it decodes to, `same` is known from the
  container alone before decoding (`predict_format`): batch runs use it to skip outputs that
  already exist without decoding their inputs.

Light on purpose (no numpy, no Pillow): `mprnet --help` and `choices` import this table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import import_module
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Final, Protocol

from mprnet_cli.errors import InputError, UsageError

if TYPE_CHECKING:
    from mprnet_cli.imageio.encode import Encoder
    from mprnet_cli.imageio.pixels import ImageInfo


@dataclass(frozen=True)
class FormatSpec:
    """Everything about one output format; its `OutputFormat` member is the table row."""

    choice: str  # what users type after --format: the `OutputFormat` value
    name: str  # how messages name it
    extensions: tuple[str, ...]  # lower case with the dot; the first one names our outputs
    aliases: tuple[str, ...]  # more --format spellings
    pillow: tuple[str, ...]  # Pillow's names for the container; `same` keeps these
    magic: bytes  # a regular expression matched at the start of the file (16 bytes)
    media_type: str  # what `mprnet serve` answers with
    depths: tuple[int, ...]  # bits per channel it stores (more is reduced to the largest)
    gray: bool  # stores one channel (else gray is written as equal RGB channels)
    alpha: bool  # stores transparency (else alpha is flattened onto white)
    gray_alpha_depths: tuple[int, ...]  # depths at which gray+alpha is kept (else RGBA)
    icc: bool  # embeds an ICC profile
    exif: bool  # embeds EXIF
    dpi: bool  # records DPI (silently absent otherwise: nobody misses it)
    lossy: bool  # takes --jpeg-quality
    encoder: str  # "module:function", an `encode.Encoder`; imported when first used
    max_side: int | None = None  # pixels per side
    max_exif: int | None = None  # bytes of EXIF it can embed

    @property
    def extension(self) -> str:
        """The suffix of the files we write in this format."""
        return self.extensions[0]

    def can_hold(self, info: ImageInfo) -> bool:
        """Whether the decoded image fits without loss of depth, gray or alpha (for `same`)."""
        return (
            info.bit_depth in self.depths
            and (self.alpha or not info.has_alpha)
            and (self.gray or not info.grayscale)
        )


_TIFF_MAGIC: Final = rb"II\*\x00|MM\x00\*|II\+\x00|MM\x00\+"  # classic and BigTIFF


class OutputFormat(str, Enum):
    """Output file format; the value is what users type after --format.

    Each member but SAME is declared by its `FormatSpec` (the table); `.spec` reads it.
    """

    _value_: str
    _spec: FormatSpec | None

    SAME = "same"
    PNG = FormatSpec(
        choice="png",
        name="PNG",
        extensions=(".png",),
        aliases=(),
        pillow=("PNG",),
        magic=rb"\x89PNG\r\n\x1a\n",
        media_type="image/png",
        depths=(8, 16),
        gray=True,
        alpha=True,
        gray_alpha_depths=(8, 16),
        icc=True,
        exif=True,
        dpi=True,
        lossy=False,
        encoder="mprnet_cli.imageio.encode:encode_png",
    )
    JPEG = FormatSpec(
        choice="jpg",
        name="JPEG",
        extensions=(".jpg", ".jpeg", ".jpe", ".jfif"),
        aliases=("jpeg",),
        pillow=("JPEG", "MPO"),  # MPO: a JPEG with more pictures after the first
        magic=rb"\xff\xd8\xff",
        media_type="image/jpeg",
        depths=(8,),
        gray=True,
        alpha=False,
        gray_alpha_depths=(),
        icc=True,
        exif=True,
        dpi=True,
        lossy=True,
        encoder="mprnet_cli.imageio.encode:encode_jpeg",
        max_side=65500,  # libjpeg's JPEG_MAX_DIMENSION
        max_exif=65533,  # an APP1 segment payload
    )
    WEBP = FormatSpec(
        choice="webp",
        name="WebP",
        extensions=(".webp",),
        aliases=(),
        pillow=("WEBP",),
        magic=rb"RIFF....WEBP",
        media_type="image/webp",
        depths=(8,),
        gray=False,
        alpha=True,
        gray_alpha_depths=(),
        icc=True,
        exif=True,
        dpi=False,
        lossy=True,
        encoder="mprnet_cli.imageio.encode:encode_webp",
        max_side=16383,
    )
    TIFF = FormatSpec(
        choice="tiff",
        name="TIFF",
        extensions=(".tif", ".tiff"),  # '.tif' like Lightroom/Photoshop exports
        aliases=("tif",),
        pillow=("TIFF",),
        magic=_TIFF_MAGIC,
        media_type="image/tiff",
        depths=(8, 16),
        gray=True,
        alpha=True,
        gray_alpha_depths=(8,),  # valid TIFF, but neither Pillow nor OpenCV reads 16-bit back
        icc=True,
        exif=True,
        dpi=True,
        lossy=False,
        encoder="mprnet_cli.imageio.encode:encode_tiff",
    )

    def __new__(cls, row: FormatSpec | str) -> OutputFormat:
        choice = row if isinstance(row, str) else row.choice
        member = str.__new__(cls, choice)
        member._value_ = choice
        member._spec = None if isinstance(row, str) else row
        return member

    @property
    def spec(self) -> FormatSpec:
        """This format's row of the table; `same` has none (resolve it first)."""
        if self._spec is None:
            raise ValueError("resolve OutputFormat.SAME with resolve_format() first")
        return self._spec


#: The concrete formats, in the order help and errors list them.
FORMATS: Final = tuple(f for f in OutputFormat if f is not OutputFormat.SAME)

#: What `same` writes when the input's format cannot hold the result, or is not ours.
SAME_FALLBACK: Final = OutputFormat.PNG


def or_list(words: list[str] | tuple[str, ...], conjunction: str = "or") -> str:
    """'a, b or c': how messages list alternatives."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


#: The --format values, for help and errors: "png, jpg, webp, tiff".
FORMAT_CHOICES: Final = ", ".join(f.value for f in FORMATS)
#: The help of --format (the CLI and the HTTP API say the same).
FORMAT_HELP: Final = (
    f"{FORMAT_CHOICES}, or same: the input's format where it can hold the result, "
    f"else {SAME_FALLBACK.value}."
)
#: The formats --jpeg-quality applies to: "JPEG and WebP".
LOSSY_NAMES: Final = or_list([f.spec.name for f in FORMATS if f.spec.lossy], "and")
#: The extensions an output file may have: ".png, .jpg, .webp or .tif".
OUTPUT_EXTENSIONS_TEXT: Final = or_list([f.spec.extension for f in FORMATS])

_BY_SPELLING: Final = {
    spelling: fmt
    for fmt in OutputFormat
    for spelling in (fmt.value, *(fmt.spec.aliases if fmt is not OutputFormat.SAME else ()))
}


def parse_format(text: str) -> OutputFormat:
    """A --format value in any case or spelling (jpeg, tif, ...); `UsageError` otherwise."""
    fmt = _BY_SPELLING.get(str(text).strip().lower())
    if fmt is None:
        raise UsageError(f"expected {or_list([*(f.value for f in FORMATS), 'same'])}, got {text!r}")
    return fmt


def example_name(stem: str, fmt: OutputFormat = SAME_FALLBACK) -> str:
    """A file name for help texts ("out.png"), so that no other module spells an extension."""
    return f"{stem}{fmt.spec.extension}"


_SUFFIXES: Final = {ext: fmt for fmt in FORMATS for ext in fmt.spec.extensions}
_CONTAINERS: Final = {name: fmt for fmt in FORMATS for name in fmt.spec.pillow}

#: What a folder or glob contributes: every still/first-frame format Pillow decodes well,
#: the output formats' extensions and these read-only ones.
_READ_ONLY_EXTENSIONS: Final = (
    ".apng .bmp .dib .gif .ppm .pgm .pbm .pnm .tga .jp2 .j2k .jpf .jpx .avif .qoi .pcx .sgi .ico"
)
IMAGE_EXTENSIONS: Final = frozenset([*_SUFFIXES, *_READ_ONLY_EXTENSIONS.split()])


def format_of_container(name: str | None) -> OutputFormat | None:
    """The output format of a container by Pillow's name ("MPO" is JPEG); None if not ours."""
    return _CONTAINERS.get(name or "")


def resolve_format(requested: OutputFormat, info: ImageInfo) -> OutputFormat:
    """The concrete format to write; SAME follows the rule in the module docstring."""
    requested = OutputFormat(requested)
    if requested is not OutputFormat.SAME:
        return requested
    fmt = format_of_container(info.format)
    if fmt is None or not fmt.spec.can_hold(info):
        return SAME_FALLBACK
    return fmt


@cache
def _magic() -> tuple[tuple[re.Pattern[bytes], OutputFormat], ...]:
    return tuple((re.compile(f.spec.magic, re.DOTALL), f) for f in FORMATS)


def container_of(head: bytes) -> OutputFormat | None:
    """The output format whose container starts with `head` (16 bytes); None if not ours."""
    return next((fmt for magic, fmt in _magic() if magic.match(head)), None)


def predict_format(
    path: Path | Callable[[int], bytes], requested: OutputFormat
) -> OutputFormat | None:
    """The format `resolve_format` will choose for this file, without decoding it.

    A file's own container always holds what it decodes to (JPEG: 8-bit, no alpha; WebP:
    8-bit colour; PNG and TIFF: anything), so `same` needs only the magic bytes. None when
    the file cannot be read; the run reports that when it decodes. `path` may instead be
    a function returning the first N bytes (an object in a store).
    """
    requested = OutputFormat(requested)
    if requested is not OutputFormat.SAME:
        return requested
    try:
        if callable(path):
            head = path(16)
        else:
            with path.open("rb") as fp:
                head = fp.read(16)
    except OSError:
        return None
    return container_of(head) or SAME_FALLBACK


def extension_for(fmt: OutputFormat) -> str:
    """File suffix for a concrete format (its canonical extension)."""
    return OutputFormat(fmt).spec.extension


def format_from_suffix(path: str | os.PathLike[str]) -> OutputFormat | None:
    """The format a file name asks for (case-insensitive), or None if we cannot write it."""
    return _SUFFIXES.get(Path(path).suffix.lower())


def encoder_of(fmt: OutputFormat) -> Encoder:
    """The function that encodes `fmt` (imported on first use: this table stays light)."""
    return _encoder(OutputFormat(fmt).spec.encoder)


@cache
def _encoder(where: str) -> Encoder:
    module, _, function = where.partition(":")
    found: Encoder = getattr(import_module(module), function)
    return found


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


#: Video containers read and written (`mprnet_cli.video`), named here with the image
#: formats so the planner knows them without importing the video package.
_VIDEO: Final = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
VIDEO_EXTENSIONS: Final = frozenset(_VIDEO)
VIDEO_EXTENSIONS_TEXT: Final = ", ".join(_VIDEO)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def is_video(path: _Named | str) -> bool:
    """A video by its name: one of `VIDEO_EXTENSIONS` (paths and object-store paths alike)."""
    name = path if isinstance(path, str) else path.name
    return PurePath(name).suffix.lower() in VIDEO_EXTENSIONS
