"""The Ray engine's tasks: the shared per-image stages (`runners.stages`) over rows.

Plain functions (no ray import): Ray Data calls them in its CPU tasks; the network stage
that sits between them is `cluster._Network`. The CLI's files travel in chunks (one row,
one block and one task per stage for many small images: `plan._CHUNK_BYTES`); a caller's
Dataset travels row by row. Payloads are pickled stage items: integer pixels both ways.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mprnet_cli.choices import OutputFormat
from mprnet_cli.errors import InputError
from mprnet_cli.imageio.locations import StorePath, Where, location
from mprnet_cli.jobs import Destination, Job, OutputPlan, Status, reason
from mprnet_cli.runners import stages
from mprnet_cli.runners.ray.plan import PAYLOAD


@dataclass(frozen=True)
class Planned:
    """One pending job as it travels: its place in the run and its planned output."""

    index: int
    source: str
    root: str  # "" when none
    target: str  # "" when not predictable before decoding

    def job(self) -> Job:
        return Job(location(self.source), root=location(self.root) if self.root else None)


@dataclass(frozen=True)
class Retarget:
    """Decoding settled another output name than the one planned from the input's name
    (`--format same` on a file whose content is not what its extension says): the driver
    screens the job again under `target` and runs it once more."""

    target: str


def _pack(item: object) -> bytes:
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(data: bytes) -> Any:
    return pickle.loads(data)


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


# --------------------------------------------------------------------------- files (chunks)


def _decode_one(
    planned: Planned, plan: OutputPlan, max_pixels: int | None, retarget: bool
) -> stages.Decoded | stages.Failed | Retarget:
    """Read and decode one planned file; `--format same` is settled here, from the bytes
    read anyway. Another output name than the planned one goes back to the driver
    (`retarget`), or fails when it was planned from the decoded file already."""
    job = planned.job()
    source = job.source
    assert source is not None
    data = source.read_bytes() if isinstance(source, StorePath) else source
    item = stages.decode(data, job.label, plan.format, max_pixels)
    if isinstance(item, stages.Decoded):
        settled = str(plan.target(job, item.fmt))
        if settled != planned.target and retarget:
            return Retarget(settled)
        if settled != planned.target:
            return stages.Failed(
                f"the file changed while the run was planned (its output would now be "
                f"{settled}); run again",
                *item.size,
            )
    return item


def _decode_chunk(
    row: dict[str, Any], *, plan: OutputPlan, max_pixels: int | None, cwd: str, retarget: bool
) -> dict[str, Any]:
    """Ray task: decode every file of a chunk (one failing alone)."""
    chunk: list[Planned] = _unpack(row[PAYLOAD])
    out: list[tuple[Planned, stages.Item | Retarget]] = []
    for planned in chunk:
        try:
            with _in_folder(cwd, location(planned.source)):
                item = _decode_one(planned, plan, max_pixels, retarget)
        except InputError as exc:
            item = stages.Failed(reason(exc, planned.source))
        out.append((planned, item))
    return {"chunk": row["chunk"], PAYLOAD: _pack(out)}


def _write_chunk(
    row: dict[str, Any], *, plan: OutputPlan, jpeg_quality: int, overwrite: bool, cwd: str
) -> dict[str, Any]:
    """Ray task: encode and write every restored image of a chunk atomically to its
    planned name (an object: in one request, after checking it is absent unless `overwrite`)."""
    chunk: list[tuple[Planned, stages.Item | Retarget]] = _unpack(row[PAYLOAD])
    directory = plan.destination is Destination.DIRECTORY
    out: list[tuple[int, stages.Written | Retarget]] = []
    for planned, item in chunk:
        assert not isinstance(item, stages.Decoded)
        if isinstance(item, Retarget):
            out.append((planned.index, item))
            continue
        target = location(planned.target) if planned.target else None
        if target is None:  # unpredictable, so it cannot have been decoded: a failure
            out.append((planned.index, stages.write(item, _nowhere, jpeg_quality)))
            continue
        sink = stages.sink_for(target, overwrite=overwrite, make_folder=directory)
        try:
            with _in_folder(cwd, target):
                written = stages.write(item, sink, jpeg_quality)
        except InputError as exc:  # the folder is not there: fail the row, not the job
            size = item.size if isinstance(item, stages.Restored) else (None, None)
            written = stages.write(stages.Failed(str(exc), *size), sink, jpeg_quality)
        out.append((planned.index, written))
    return {"chunk": row["chunk"], PAYLOAD: _pack(out)}


def _nowhere(data: bytes) -> None:
    raise AssertionError("an image without a planned output was restored")


# --------------------------------------------------------------------------- datasets (rows)


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
    item: stages.Item
    if isinstance(data, (bytes, bytearray, memoryview)):
        item = stages.decode(bytes(data), label, fmt, max_pixels)
    else:
        item = stages.Failed(
            f"column {column!r} holds {type(data).__name__}, not the bytes of an image"
        )
    return {**row, PAYLOAD: _pack(item)}


def _encode_column(row: dict[str, Any], *, jpeg_quality: int) -> dict[str, Any]:
    """Ray task: encode the restored payload into the output columns."""
    payload = row.pop(PAYLOAD)
    written = stages.write(_unpack(payload), lambda data: data, jpeg_quality)
    ok = written.status is Status.OK
    return {
        **row,
        "restored": written.data if ok else None,
        "format": written.fmt.value if ok and written.fmt is not None else None,
        "status": written.status.value,
        "error": written.error,
    }
