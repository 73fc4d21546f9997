"""Image I/O: decode for the network, encode the restored result as the same kind of file.

Photographers expect the output to be the input, only cleaner: same format, bit depth,
grayscale-ness, alpha, orientation, ICC profile, EXIF and DPI. The network only sees
float32 RGB in [0, 1]; everything else is carried in `ImageInfo` and restored by the writer.
No torch here: this layer is used by `mprnet --help`-fast code paths and by tests.

One job per module, each documenting its rules:

* `pixels.py`: `ImageInfo`, `DecodedImage`, quantisation and the float <-> integer formula.
* `formats.py`: the table of output formats (one `FormatSpec` each), the extensions we
  read, what `same` resolves to.
* `decode.py`: `read_image` (modes, 16-bit via OpenCV, size limit, broken input).
* `metadata.py`: EXIF, ICC, DPI and orientation.
* `encode.py`: `encode_image`, `write_image`, `output_notes` and our PNG/TIFF writers.
* `atomic.py`: temporary files and atomic writes.
* `warnings_capture.py`: Pillow's decode warnings as per-image notes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Each public name loads its module on first use (PEP 562), so that importing the table of
# formats (`imageio.formats`, which `mprnet --help` reads) loads neither Pillow nor numpy.
if TYPE_CHECKING:
    from mprnet_cli.imageio.atomic import (
        check_writable_folder,
        temp_target,
        write_bytes_atomic,
    )
    from mprnet_cli.imageio.decode import DEFAULT_MAX_PIXELS, read_image
    from mprnet_cli.imageio.encode import (
        DEFAULT_JPEG_QUALITY,
        OutputPixels,
        encode_image,
        encode_pixels,
        output_notes,
        prepare_pixels,
        write_file,
        write_image,
        write_pixels,
    )
    from mprnet_cli.imageio.formats import (
        IMAGE_EXTENSIONS,
        OutputFormat,
        extension_for,
        format_from_suffix,
        list_images,
        predict_format,
        resolve_format,
    )
    from mprnet_cli.imageio.pixels import (
        DecodedImage,
        FloatArray,
        ImageInfo,
        UIntArray,
        in_uint16_range,
        in_unit_range,
        to_uint8,
        to_uint16,
        unit_rgb,
    )

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "DecodedImage",
    "FloatArray",
    "ImageInfo",
    "OutputFormat",
    "OutputPixels",
    "UIntArray",
    "check_writable_folder",
    "encode_image",
    "encode_pixels",
    "extension_for",
    "format_from_suffix",
    "in_uint16_range",
    "in_unit_range",
    "list_images",
    "output_notes",
    "predict_format",
    "prepare_pixels",
    "read_image",
    "resolve_format",
    "temp_target",
    "to_uint8",
    "to_uint16",
    "unit_rgb",
    "write_bytes_atomic",
    "write_file",
    "write_image",
    "write_pixels",
]

#: Where `__getattr__` looks for a public name, lightest first.
_MODULES = ("formats", "pixels", "atomic", "decode", "encode")


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    if name in __all__:
        for module in _MODULES:
            namespace = vars(import_module(f"{__name__}.{module}"))
            if name in namespace:
                globals()[name] = namespace[name]
                return namespace[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
