"""A job's `Result` record (one `--json` line) and the helpers that build it, once for
every runner.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from mprnet_cli.host.stdio import name_bytes, valid_text
from mprnet_cli.imageio import ImageInfo, OutputFormat, output_notes

if TYPE_CHECKING:
    from mprnet_cli.inference.pipeline import RunStats
from mprnet_cli.jobs.inputs import Job
from mprnet_cli.jobs.outputs import Target


class Status(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


#: The keys of a `--json` line (`Result.to_json`), in order: the documented output schema.
JSON_FIELDS: Final[tuple[str, ...]] = (
    "input",
    "output",
    "status",
    "error",
    "width",
    "height",
    "seconds",
    "device",
    "backend",
    "precision",
    "tiles",
    "warnings",
)


@dataclass(frozen=True)
class Result:
    """What happened to one input: one `--json` line."""

    input: str
    output: str | None
    status: Status
    error: str | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    device: str | None = None
    backend: str | None = None
    precision: str | None = None
    tiles: int | None = None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The `JSON_FIELDS`, in that order (the schema is declared in one place), then
        `<field>_bytes_b64` for an input or output name that is not valid UTF-8.

        Strings are always valid Unicode (undecodable bytes shown as `\\xNN`), so every JSON
        reader gets the same text; the base64 field is the lossless original name."""
        converted: dict[str, Any] = {
            "status": self.status.value,
            "seconds": None if self.seconds is None else round(self.seconds, 4),
            "warnings": [valid_text(w) for w in self.warnings],
        }
        record = {
            name: converted[name] if name in converted else getattr(self, name)
            for name in JSON_FIELDS
        }
        for name in ("input", "output", "error"):
            if isinstance(record[name], str):
                record[name] = valid_text(record[name])
        for name in ("input", "output"):
            raw = name_bytes(getattr(self, name) or "")
            if raw is not None:
                record[f"{name}_bytes_b64"] = base64.b64encode(raw).decode("ascii")
        return record


class RestorerLike(Protocol):
    """What the runner needs of `mprnet_cli.api.Restorer` (tests pass stand-ins)."""

    def restore_rgb(
        self,
        rgb: npt.NDArray[np.float32],
        *,
        progress: Callable[[int, int], None] | None = ...,
        warn: Callable[[str], None] | None = ...,
    ) -> tuple[npt.NDArray[np.float32], RunStats]: ...


@dataclass
class Callbacks:
    """Progress hooks. A runner calls them one at a time (never two at once), but not
    necessarily on the thread that iterates it: `finished` runs as soon as the result is
    settled (its output written), on the thread that settled it."""

    started: Callable[[Job, int, int], None] | None = None  # job, width, height: restore begins
    tiles: Callable[[int, int], None] | None = None  # done, total tiles of the current image
    frames: Callable[[int, int | None], None] | None = None  # done, total (None: unknown) of a clip
    # when the output is written (or the failure known), before the result is yielded; also
    # for results settled when the run is stopped (Ctrl-C, SIGTERM, an error), which are
    # then never yielded
    finished: Callable[[Result], None] | None = None


# --------------------------------------------------------------------------- per-job rules


def reason(exc: BaseException, label: str) -> str:
    """The error message without the leading "<label>: " (the CLI adds it back once)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.removeprefix(f"{label}: ")


def _prefixed(note: str, label: str) -> str:
    return note if note.startswith(label) else f"{label}: {note}"


def unexpected(exc: BaseException, what: str) -> str:
    """The message for an exception that is not an `MprnetError`: a bug to report."""
    return (
        f"unexpected {type(exc).__name__} while {what}: {exc}. This is a bug in mprnet: "
        "rerun with MPRNET_DEBUG=1 for the traceback and report it"
    )


def failed(job: Job, error: str, output: Target | None = None, **kw: Any) -> Result:
    """The record of a job that failed (`output` when its target was known)."""
    out = None if output is None else str(output)
    return Result(job.label, out, Status.FAILED, error=error, **kw)


def image_notes(
    info: ImageInfo,
    fmt: OutputFormat,
    *,
    has_alpha: bool,
    warned: Iterable[str] = (),
    run_notes: Iterable[str] = (),
) -> tuple[str, ...]:
    """What the user is told about one restored image: decode notes, format losses, run notes."""
    return (*info.notes, *output_notes(info, fmt, has_alpha=has_alpha), *warned, *run_notes)


def restored(
    job: Job,
    target: Target,
    notes: Iterable[str],
    *,
    seconds: float | None,
    device: str | None,
    tiles: int | None,
    width: int,
    height: int,
    backend: str | None = None,
    precision: str | None = None,
) -> Result:
    """The record of a restored image; each warning names its input once."""
    return Result(
        job.label,
        str(target),
        Status.OK,
        seconds=seconds,
        device=device,
        backend=backend,
        precision=precision,
        tiles=tiles,
        warnings=tuple(dict.fromkeys(_prefixed(n, job.display) for n in notes)),
        width=width,
        height=height,
    )


def skipped_at_write(done: Result) -> Result:
    """The output appeared between the check and the write (another process): not ours."""
    return dataclasses.replace(
        done,
        status=Status.SKIPPED,
        seconds=None,
        device=None,
        backend=None,
        precision=None,
        tiles=None,
    )


def failed_at_write(done: Result, error: str) -> Result:
    """A restored image that could not be written (`done`: its record had it been)."""
    return dataclasses.replace(done, status=Status.FAILED, error=error, seconds=None)
