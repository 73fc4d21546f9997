"""The per-job rules every runner applies: screening, claims, stale temp files, result records.

A runner (the threaded one in `mprnet_cli.batch`, the Ray one in `mprnet_cli.runners.ray`)
is an executor: it decodes, restores and writes. What a job's output is called, whether it
may be written (collisions, input == output, an existing output without --overwrite), which
temporary files a killed run left for it, and what its `Result` says are decided here, once,
so the runners cannot drift apart. No threads, no Ray, no torch: plain bookkeeping.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mprnet_cli.batch import (
    STALE_TEMP_SECONDS,
    Job,
    OutputPlan,
    Result,
    Status,
    Target,
    _key,
    _prefixed,
    _TempSweeper,
)
from mprnet_cli.choices import OutputFormat
from mprnet_cli.imageio import ImageInfo, output_notes

__all__ = [
    "Planner",
    "Screened",
    "failed",
    "failed_at_write",
    "image_notes",
    "restored",
    "skipped_at_write",
    "unexpected",
]


def failed(job: Job, error: str, output: Target | None = None, **kw: Any) -> Result:
    """The record of a job that failed (`output` when its target was known)."""
    out = None if output is None else str(output)
    return Result(job.label, out, Status.FAILED, error=error, **kw)


def unexpected(exc: BaseException, what: str) -> str:
    """The message for an exception that is not an `MprnetError`: a bug to report."""
    return (
        f"unexpected {type(exc).__name__} while {what}: {exc}. This is a bug in mprnet: "
        "rerun with MPRNET_DEBUG=1 for the traceback and report it"
    )


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
) -> Result:
    """The record of a restored image; each warning names its input once."""
    return Result(
        job.label,
        str(target),
        Status.OK,
        seconds=seconds,
        device=device,
        tiles=tiles,
        warnings=tuple(dict.fromkeys(_prefixed(n, job.display) for n in notes)),
        width=width,
        height=height,
    )


def skipped_at_write(done: Result) -> Result:
    """The output appeared between the check and the write (another process): not ours."""
    return dataclasses.replace(done, status=Status.SKIPPED, seconds=None, device=None, tiles=None)


def failed_at_write(done: Result, error: str) -> Result:
    """A restored image that could not be written (`done`: its record had it been)."""
    return dataclasses.replace(done, status=Status.FAILED, error=error, seconds=None)


@dataclass(frozen=True)
class Screened:
    """A job the planner let through, with the output it is to write (claimed)."""

    job: Job
    target: Path | None  # None: not predictable (unreadable file); decoding will say why


@dataclass
class Planner:
    """Claims outputs and decides, before any pixel is decoded where possible, what a job may do.

    One per run. `check` is the rule book for a concrete target; `screen` applies it to the
    target predicted from the file's name and magic bytes, which is what a runner that
    cannot go back to the planner after decoding (Ray) needs.
    """

    plan: OutputPlan
    jobs: Sequence[Job]
    overwrite: bool = False
    max_temp_age: float = STALE_TEMP_SECONDS
    _claims: dict[str, str] = field(default_factory=dict)
    _inputs: set[str] = field(default_factory=set)
    _sweeper: _TempSweeper = field(init=False)

    def __post_init__(self) -> None:
        self._inputs = {
            _key(j.source) for j in self.jobs if j.source is not None and j.error is None
        }
        self._sweeper = _TempSweeper(self.max_temp_age)

    def check(self, job: Job, target: Path) -> Result | None:
        """Collisions, input == output and existing outputs; None when the job may write.

        Claims `target` for `job` (a later job with the same output fails), and removes the
        stale temporary files a killed run left for it.
        """
        key = _key(target)
        self._sweeper.sweep(target)
        earlier = self._claims.get(key)
        if earlier is not None:
            return failed(
                job,
                f"its output {target} is also the output of {earlier}; use -o with "
                "separate folders or --suffix to tell them apart",
                target,
            )
        self._claims[key] = job.label
        if job.source is not None and key == _key(job.source):
            return failed(job, "the output would replace the input; change --suffix or -o", target)
        if target.is_dir():
            return failed(job, f"the output {target} is a folder", target)
        if not self.overwrite and os.path.lexists(target):
            return Result(job.label, str(target), Status.SKIPPED)
        if key in self._inputs:
            return failed(
                job,
                f"its output {target} is another input of this run; change --suffix or -o",
                target,
            )
        return None

    def release(self, target: Path) -> None:
        """Forget a claim (the runner will claim the settled name again after decoding)."""
        self._claims.pop(_key(target), None)

    def screen(self, job: Job) -> Result | Screened:
        """A job's fate from its name alone: its record (failed, skipped) or its claimed target.

        A job whose output cannot be predicted (its file is unreadable) goes through with
        no target; decoding it reports why.
        """
        if job.error is not None:
            return failed(job, job.error)
        predicted = self.plan.predict(job)
        if predicted is None:
            return Screened(job, None)
        verdict = self.check(job, predicted)
        return Screened(job, predicted) if verdict is None else verdict
