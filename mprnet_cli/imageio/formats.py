"""Which files we read, which formats we write, and which one `same` means.

* `OutputFormat.SAME` (`resolve_format`): JPEG (and MPO) -> JPEG, PNG -> PNG, WebP -> WebP,
  TIFF -> TIFF, when that format can hold the result (JPEG: 8-bit, no alpha - always true for
  a JPEG input; WebP: 8-bit colour - always true for a WebP input); every other format (BMP,
  GIF, PPM, ICO, JPEG 2000, AVIF, ...) -> PNG, which is lossless and holds every depth, gray,
  alpha and metadata combination we produce.
* Because a file's own container always holds what it decodes to, `same` is known from the
  container alone before decoding (`predict_format`): batch runs use it to skip outputs that
  already exist without decoding their inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Final, Protocol

from mprnet_cli.choices import OutputFormat
from mprnet_cli.errors import InputError
from mprnet_cli.imageio.pixels import ImageInfo

#: What a folder or glob contributes: every still/first-frame format Pillow decodes well.
_EXTENSION_WORDS: Final = (
    ".jpg .jpeg .jpe .jfif .png .apng .webp .tif .tiff .bmp .dib .gif .ppm .pgm .pbm .pnm "
    ".tga .jp2 .j2k .jpf .jpx .avif .qoi .pcx .sgi .ico"
)
IMAGE_EXTENSIONS: Final = frozenset(_EXTENSION_WORDS.split())

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
NICE_NAMES: Final = {
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


#: Leading bytes of the containers `same` keeps, by Pillow's format name (MPO is a JPEG).
_MAGIC: Final = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)


def container_of(head: bytes) -> str | None:
    """Pillow's format name for a file starting with `head` (16 bytes), None if not one of ours."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


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
    return _FORMAT_OF_PILLOW.get(container_of(head) or "", OutputFormat.PNG)


def extension_for(fmt: OutputFormat) -> str:
    """File suffix for a concrete format ('.tif' like Lightroom/Photoshop exports)."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.SAME:
        raise ValueError("resolve OutputFormat.SAME with resolve_format() first")
    return _EXTENSIONS[fmt]


def format_from_suffix(path: str | os.PathLike[str]) -> OutputFormat | None:
    """The format a file name asks for (case-insensitive), or None if we cannot write it."""
    return _SUFFIXES.get(Path(path).suffix.lower())


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
VIDEO_EXTENSIONS: Final = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def is_video(path: _Named | str) -> bool:
    """A video by its name: one of `VIDEO_EXTENSIONS` (paths and object-store paths alike)."""
    name = path if isinstance(path, str) else path.name
    return PurePath(name).suffix.lower() in VIDEO_EXTENSIONS
