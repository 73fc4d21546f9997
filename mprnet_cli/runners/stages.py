"""The per-image stages every engine runs, once: decode, restore, encode + write, record.

    decode(bytes or path) -> Decoded -> restore(restorer) -> Restored -> write(sink) -> Written
                                                                          record(job) -> Result

Each stage turns its failures into a `Failed` item (the local engine's reasons, word for
word) that the later stages pass along, so one bad file fails alone on any engine. Items
are small and picklable: pixels travel as the integers they were decoded from (`Decoded`)
and as the integers that will be stored (`Restored.output` once `quantize` ran), never
as float32. No threads, no Ray, no torch import here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mprnet_cli.choices import OutputFormat
from mprnet_cli.errors import MprnetError, OutputExistsError
from mprnet_cli.imageio import (
    ImageInfo,
    OutputPixels,
    UIntArray,
    encode_pixels,
    prepare_pixels,
    read_image,
    resolve_format,
    to_uint8,
    to_uint16,
    unit_rgb,
    write_file,
)
from mprnet_cli.imageio.locations import StorePath, Where
from mprnet_cli.jobs import (
    Job,
    RestorerLike,
    Result,
    Status,
    Target,
    failed,
    failed_at_write,
    image_notes,
    make_output_folder,
    reason,
    restored,
    skipped_at_write,
    unexpected,
)


@dataclass(frozen=True)
class Failed:
    """A stage's failure: the reason, and the size when the image was decoded."""

    error: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Decoded:
    """Compact integer pixels: (H, W) gray or (H, W, 3), uint8 or uint16 per `info.bit_depth`;
    `fmt` is the output format, settled from the decoded image (`--format same`)."""

    label: str
    pixels: npt.NDArray[Any]
    alpha: UIntArray | None
    info: ImageInfo
    fmt: OutputFormat
    seconds: float

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes) + (0 if self.alpha is None else int(self.alpha.nbytes))

    def rgb(self) -> npt.NDArray[np.float32]:
        """The network's input, bit for bit what `read_image` produced."""
        return unit_rgb(self.pixels, self.info.bit_depth)


@dataclass(frozen=True)
class Ran:
    """How an image was restored, for its record: the `RunStats` fields a record shows."""

    seconds: float | None
    device: str | None
    tiles: int | None
    backend: str | None = None
    precision: str | None = None


@dataclass(frozen=True)
class Restored:
    """A restored image: float `rgb` until `quantize` turns it into the stored `output`."""

    label: str
    rgb: npt.NDArray[np.float32] | None
    output: OutputPixels | None
    alpha: UIntArray | None
    info: ImageInfo
    fmt: OutputFormat
    ran: Ran
    notes: tuple[str, ...]
    width: int = 0
    height: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def pixels(self) -> OutputPixels:
        """The integer pixels to store (quantised now if `quantize` has not run)."""
        if self.output is not None:
            return self.output
        assert self.rgb is not None
        return prepare_pixels(self.rgb, self.info, self.fmt, alpha=self.alpha)


@dataclass(frozen=True)
class Written:
    """The write stage's outcome; `written` False: the image never reached it (failed earlier)."""

    status: Status
    error: str | None = None
    written: bool = True
    width: int | None = None
    height: int | None = None
    ran: Ran | None = None
    notes: tuple[str, ...] = ()
    fmt: OutputFormat | None = None
    data: bytes | None = dataclasses.field(default=None, repr=False)  # when the sink returns it


Item = Decoded | Restored | Failed
Bug = Callable[[Exception, str], str]  # an unexpected exception -> its reason (or raise)


def report_bugs(exc: Exception, what: str) -> str:
    """`Bug` hook that fails the file with a message asking for a bug report."""
    return unexpected(exc, what)


def raise_bugs(exc: Exception, what: str) -> str:
    """`Bug` hook that raises instead of failing the file (MPRNET_DEBUG)."""
    raise exc


# --------------------------------------------------------------------------- decode


def decode(
    source: Path | bytes,
    label: str,
    fmt: OutputFormat,
    max_pixels: int | None,
    *,
    bug: Bug = report_bugs,
) -> Decoded | Failed:
    """Decode one input; the output format is settled here, from the bytes just read."""
    start = time.perf_counter()
    try:
        image = read_image(source, name=label, max_pixels=max_pixels)
    except MprnetError as exc:
        return Failed(reason(exc, label))
    except Exception as exc:
        return Failed(bug(exc, "decoding"))
    info = image.info
    pixels: npt.NDArray[Any] = to_uint16(image.rgb) if info.bit_depth == 16 else to_uint8(image.rgb)
    if info.grayscale:
        pixels = np.ascontiguousarray(pixels[..., 0])
    return Decoded(
        label,
        pixels,
        image.alpha,
        info,
        resolve_format(fmt, info),
        time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- restore


def restore(
    restorer: RestorerLike,
    item: Decoded | Failed,
    *,
    progress: Callable[[int, int], None] | None = None,
    bug: Bug = report_bugs,
) -> Restored | Failed:
    """Run the network on one decoded image (a `Failed` item passes through)."""
    if isinstance(item, Failed):
        return item
    warned: list[str] = []
    try:
        out, stats = restorer.restore_rgb(item.rgb(), progress=progress, warn=warned.append)
    except MprnetError as exc:
        return Failed(reason(exc, item.label), *item.size)
    except Exception as exc:
        return Failed(bug(exc, "restoring"), *item.size)
    notes = image_notes(
        item.info, item.fmt, has_alpha=item.alpha is not None, warned=warned, run_notes=stats.notes
    )
    width, height = item.size
    return Restored(
        item.label,
        out,
        None,
        item.alpha,
        item.info,
        item.fmt,
        Ran(
            item.seconds + stats.seconds, stats.device, stats.tiles, stats.backend, stats.precision
        ),
        notes,
        width=width,
        height=height,
    )


def quantize(item: Restored | Failed) -> Restored | Failed:
    """The restored floats as the integers that will be stored (what crosses a network)."""
    if isinstance(item, Failed) or item.output is not None:
        return item
    return dataclasses.replace(item, output=item.pixels(), rgb=None, alpha=None)


# --------------------------------------------------------------------------- encode + write


def write(
    item: Restored | Failed,
    sink: Callable[[bytes], Any],
    jpeg_quality: int,
    *,
    bug: Bug = report_bugs,
) -> Written:
    """Encode a restored image and hand the bytes to `sink` (an atomic file write, an object
    put, stdout, or a column); every outcome becomes a `Written`."""
    if isinstance(item, Failed):
        return Written(
            Status.FAILED, error=item.error, written=False, width=item.width, height=item.height
        )
    width, height = item.size
    start = time.perf_counter()
    status, error, data = Status.OK, None, None
    try:
        result = sink(encode_pixels(item.pixels(), jpeg_quality=jpeg_quality))
        data = result if isinstance(result, bytes) else None
    except OutputExistsError:  # appeared since the plan (another process): not ours
        status = Status.SKIPPED
    except MprnetError as exc:
        status, error = Status.FAILED, reason(exc, item.label)
    except Exception as exc:
        status, error = Status.FAILED, bug(exc, "writing")
    seconds = (item.ran.seconds or 0.0) + time.perf_counter() - start
    ran = dataclasses.replace(item.ran, seconds=seconds)
    return Written(status, error, True, width, height, ran, item.notes, item.fmt, data)


def sink_for(target: Where, *, overwrite: bool, make_folder: bool) -> Callable[[bytes], None]:
    """Where `write` puts a file's bytes: an atomic file write (its folder made first for
    -o DIR), or one request for an object (after checking it is absent unless `overwrite`)."""

    def to_object(data: bytes) -> None:
        assert isinstance(target, StorePath)
        if not overwrite and target.exists():
            raise OutputExistsError(f"{target} exists")
        target.write_bytes(data)

    def to_file(data: bytes) -> None:
        assert isinstance(target, Path)
        if make_folder:
            make_output_folder(target.parent)
        write_file(target, data, overwrite=overwrite)

    return to_object if isinstance(target, StorePath) else to_file


# --------------------------------------------------------------------------- record


def record(job: Job, target: Target | None, written: Written) -> Result:
    """The one `Result` of a job whose image went through the stages (any engine)."""
    if not written.written:
        return failed(job, written.error or "failed", width=written.width, height=written.height)
    assert target is not None and written.width is not None and written.height is not None
    assert written.ran is not None
    ran: dict[str, Any] = dataclasses.asdict(written.ran)
    done = restored(job, target, written.notes, **ran, width=written.width, height=written.height)
    if written.status is Status.SKIPPED:
        return skipped_at_write(done)
    if written.status is Status.FAILED:
        return failed_at_write(done, written.error or "failed")
    return done
