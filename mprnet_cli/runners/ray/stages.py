"""The Ray engine's per-row work: decode and encode tasks, their payload records.

Plain functions over rows (no ray import): Ray Data calls them in its CPU tasks; the
network stage that sits between them is `cluster._Network`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mprnet_cli.choices import OutputFormat
from mprnet_cli.errors import InputError, MprnetError, OutputExistsError
from mprnet_cli.imageio import (
    ImageInfo,
    UIntArray,
    encode_image,
    read_image,
    resolve_format,
    to_uint8,
    to_uint16,
    write_image,
)
from mprnet_cli.jobs import (
    Destination,
    Job,
    OutputPlan,
    Status,
    make_output_folder,
    reason,
    unexpected,
)
from mprnet_cli.locations import StorePath, Where, location
from mprnet_cli.runners.ray.plan import PAYLOAD

# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class _Failed:
    error: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class _Decoded:
    """Compact integer pixels: (H, W) gray or (H, W, 3), uint8 or uint16 per `info.bit_depth`."""

    label: str
    pixels: npt.NDArray[Any]
    alpha: UIntArray | None
    info: ImageInfo
    fmt: OutputFormat
    seconds: float

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


@dataclass(frozen=True)
class _Restored:
    label: str
    rgb: npt.NDArray[np.float32]
    alpha: UIntArray | None
    info: ImageInfo
    fmt: OutputFormat
    seconds: float
    device: str
    tiles: int
    notes: tuple[str, ...]
    backend: str | None = None
    precision: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True)
class _Written:
    """The encode stage's outcome; `written` False: the image never reached it (failed earlier)."""

    status: Status
    error: str | None = None
    written: bool = True
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    device: str | None = None
    backend: str | None = None
    precision: str | None = None
    tiles: int | None = None
    notes: tuple[str, ...] = ()
    fmt: OutputFormat | None = None
    data: bytes | None = field(default=None, repr=False)  # the encoded file (Dataset path)


def _pack(item: object) -> bytes:
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(data: bytes) -> Any:
    return pickle.loads(data)


# --------------------------------------------------------------------------- stages


def _decode(source: Path | bytes, label: str, fmt: OutputFormat, max_pixels: int | None) -> Any:
    """Decode one input into a `_Decoded` (or `_Failed` with the local engine's reason)."""
    start = time.perf_counter()
    try:
        decoded = read_image(source, name=label, max_pixels=max_pixels)
    except MprnetError as exc:
        return _Failed(reason(exc, label))
    except Exception as exc:
        return _Failed(unexpected(exc, "decoding"))
    info = decoded.info
    pixels: npt.NDArray[Any] = (
        to_uint16(decoded.rgb) if info.bit_depth == 16 else to_uint8(decoded.rgb)
    )
    if info.grayscale:
        pixels = np.ascontiguousarray(pixels[..., 0])
    return _Decoded(
        label,
        pixels,
        decoded.alpha,
        info,
        resolve_format(fmt, info),
        time.perf_counter() - start,
    )


def _job_of(row: dict[str, Any]) -> Job:
    root = row["root"]
    return Job(location(row["source"]), root=location(root) if root else None)


@contextlib.contextmanager
def _in_folder(folder: str, where: Where | None = None) -> Iterator[None]:
    """Run a file task in the driver's working directory, so relative INPUTs and -o mean
    on every node what they meant on the driver (and messages name files the same way).
    An object in a store (`where`) needs no folder: nothing changes."""
    if isinstance(where, StorePath):
        yield
        return
    before = Path.cwd()
    try:
        os.chdir(folder)
    except OSError as exc:
        raise InputError(
            f"the folder {folder} the command was run from is not reachable on this Ray node "
            f"({exc.strerror or exc}); use a shared file system mounted at the same path"
        ) from None
    try:
        yield
    finally:
        os.chdir(before)


def _decode_file(
    row: dict[str, Any], *, plan: OutputPlan, max_pixels: int | None, cwd: str
) -> dict[str, Any]:
    """Ray task: read and decode one planned file; its output name must be the planned one."""
    job = _job_of(row)
    source = job.source
    assert source is not None
    try:
        with _in_folder(cwd, source):
            data = source.read_bytes() if isinstance(source, StorePath) else source
            item = _decode(data, job.label, plan.format, max_pixels)
    except InputError as exc:
        item = _Failed(reason(exc, job.label))
    if isinstance(item, _Decoded):
        settled = plan.target(job, item.fmt)
        if str(settled) != row["target"]:
            item = _Failed(
                f"the file changed while the run was planned (its output would now be "
                f"{settled}); run again",
                *item.size,
            )
    return {"index": row["index"], "target": row["target"], PAYLOAD: _pack(item)}


def _finish(item: Any, write: Callable[[_Restored], bytes | None]) -> _Written:
    """Run the encode stage's `write` on a restored image; every outcome becomes a `_Written`."""
    if isinstance(item, _Failed):
        return _Written(
            Status.FAILED, error=item.error, written=False, width=item.width, height=item.height
        )
    assert isinstance(item, _Restored)
    width, height = item.size
    start = time.perf_counter()
    status, error, data = Status.OK, None, None
    try:
        data = write(item)
    except OutputExistsError:  # appeared since the plan (another process): not ours
        status = Status.SKIPPED
    except MprnetError as exc:
        status, error = Status.FAILED, reason(exc, item.label)
    except Exception as exc:
        status, error = Status.FAILED, unexpected(exc, "writing")
    return _Written(
        status,
        error=error,
        width=width,
        height=height,
        seconds=item.seconds + time.perf_counter() - start,
        device=item.device,
        backend=item.backend,
        precision=item.precision,
        tiles=item.tiles,
        notes=item.notes,
        fmt=item.fmt,
        data=data,
    )


def _write_file(
    row: dict[str, Any], *, plan: OutputPlan, jpeg_quality: int, overwrite: bool, cwd: str
) -> dict[str, Any]:
    """Ray task: encode one restored image and write it atomically to its planned name
    (an object: in one request, after checking it is still absent unless `overwrite`)."""
    target = location(row["target"])

    def write(item: _Restored) -> None:
        if isinstance(target, StorePath):
            if not overwrite and target.exists():
                raise OutputExistsError(f"{target} exists")
            target.write_bytes(
                encode_image(
                    item.rgb, item.info, item.fmt, alpha=item.alpha, jpeg_quality=jpeg_quality
                )
            )
            return
        if plan.destination is Destination.DIRECTORY:
            make_output_folder(target.parent)
        write_image(
            target,
            item.rgb,
            item.info,
            item.fmt,
            alpha=item.alpha,
            jpeg_quality=jpeg_quality,
            overwrite=overwrite,
        )

    item = _unpack(row[PAYLOAD])
    try:
        with _in_folder(cwd, target):
            written = _finish(item, write)
    except InputError as exc:  # the folder is not there: fail the row, not the job
        size = item.size if isinstance(item, _Restored) else (None, None)
        written = _finish(_Failed(str(exc), *size), write)
    return {"index": row["index"], PAYLOAD: _pack(written)}


def _decode_column(
    row: dict[str, Any],
    *,
    column: str,
    label_column: str | None,
    fmt: OutputFormat,
    max_pixels: int | None,
) -> dict[str, Any]:
    """Ray task: decode the bytes in `row[column]` into the payload column."""
    label = str(row[label_column]) if label_column is not None else "row"
    data = row.get(column)
    if isinstance(data, (bytes, bytearray, memoryview)):
        item = _decode(bytes(data), label, fmt, max_pixels)
    else:
        item = _Failed(f"column {column!r} holds {type(data).__name__}, not the bytes of an image")
    return {**row, PAYLOAD: _pack(item)}


def _encode_column(row: dict[str, Any], *, jpeg_quality: int) -> dict[str, Any]:
    """Ray task: encode the restored payload into the output columns."""
    payload = row.pop(PAYLOAD)

    def encode(item: _Restored) -> bytes:
        return encode_image(
            item.rgb, item.info, item.fmt, alpha=item.alpha, jpeg_quality=jpeg_quality
        )

    written = _finish(_unpack(payload), encode)
    ok = written.status is Status.OK
    return {
        **row,
        "restored": written.data if ok else None,
        "format": written.fmt.value if ok and written.fmt is not None else None,
        "status": written.status.value,
        "error": written.error,
    }
