"""Where each job's output goes and what it is called (`-o`, `--suffix`, `--format`).

The rules are in the `mprnet_cli.jobs` docstring (Outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from mprnet_cli.errors import UsageError
from mprnet_cli.imageio import (
    ImageInfo,
    OutputFormat,
    extension_for,
    format_from_suffix,
    predict_format,
    resolve_format,
)
from mprnet_cli.imageio.formats import OUTPUT_EXTENSIONS_TEXT, VIDEO_EXTENSIONS_TEXT, is_video
from mprnet_cli.imageio.locations import StorePath, Where, location
from mprnet_cli.jobs.inputs import Expansion, Job, Listing


class Destination(str, Enum):
    NEXT_TO_INPUT = "next-to-input"
    DIRECTORY = "directory"
    FILE = "file"
    STDOUT = "stdout"


class _Stdout:
    """The `-o -` target (a sentinel, so no file called "-" is ever confused with it)."""

    def __repr__(self) -> str:
        return "STDOUT"

    def __str__(self) -> str:
        return "-"


STDOUT: Final = _Stdout()
Target = Path | StorePath | _Stdout


def output_name(job: Job, suffix: str, fmt: OutputFormat) -> str:
    """`<stem><suffix><ext>`, keeping the input's extension spelling when the format is its own."""
    own = job.source.suffix if job.source is not None else ""
    if job.source is not None and is_video(job.source):  # a clip keeps its container
        return f"{job.stem}{suffix}{own}"
    ext = own if own and format_from_suffix(f"x{own}") is fmt else extension_for(fmt)
    return f"{job.stem}{suffix}{ext}"


@dataclass(frozen=True)
class OutputPlan:
    """Where each job's output goes and in which format (`format` may be SAME)."""

    destination: Destination
    path: Where | None = None  # the folder (DIRECTORY) or file (FILE)
    suffix: str = ""
    format: OutputFormat = OutputFormat.SAME

    def target(self, job: Job, fmt: OutputFormat) -> Target:
        """The output for `job` written as the concrete format `fmt`."""
        if self.destination is Destination.STDOUT:
            return STDOUT
        if self.destination is Destination.FILE:
            assert self.path is not None
            return self.path
        name = output_name(job, self.suffix, fmt)
        if self.destination is Destination.DIRECTORY:
            assert self.path is not None
            return self.path / job.relative.parent / name
        if job.source is None:  # plan_outputs refuses stdin without -o
            raise UsageError("reading stdin (-) needs -o FILE, -o DIR or -o -")
        return job.source.parent / name

    def resolve(self, job: Job, info: ImageInfo) -> tuple[Target, OutputFormat]:
        fmt = resolve_format(self.format, info)
        return self.target(job, fmt), fmt

    def predict(self, job: Job) -> Where | None:
        """The output path before decoding, when it can be known for certain; else None."""
        source = job.source
        if self.destination is Destination.STDOUT or source is None:
            return None
        if self.destination is Destination.FILE:
            return self.path
        if is_video(source.name):  # named by its extension alone
            clip = self.target(job, self.format)
            return None if isinstance(clip, _Stdout) else clip
        fmt = predict_format(source.head if isinstance(source, StorePath) else source, self.format)
        if fmt is None:
            return None
        target = self.target(job, fmt)
        return None if isinstance(target, _Stdout) else target

    def guess(self, job: Job) -> Where | None:
        """The output path from the input's name alone (no read: `--format same` takes the
        format its extension names, png for the others); the decode stage settles it."""
        source = job.source
        if self.destination is Destination.STDOUT or source is None:
            return None
        if self.destination is Destination.FILE:
            return self.path
        fmt = self.format
        if fmt is OutputFormat.SAME:
            fmt = format_from_suffix(source.name) or OutputFormat.PNG
        target = self.target(job, fmt)
        return None if isinstance(target, _Stdout) else target


def plan_outputs(
    expansion: Expansion | Listing,
    output: str | None,
    *,
    suffix: str,
    fmt: OutputFormat = OutputFormat.SAME,
) -> OutputPlan:
    """Decide what `-o` means for these inputs (rules in the module docstring); UsageError if unusable."""
    if os.sep in suffix or "/" in suffix or suffix in (".", ".."):
        raise UsageError(f"--suffix {suffix!r} must not contain a path separator")
    has_stdin = expansion.has_stdin
    if output is None:
        if has_stdin:
            raise UsageError("reading stdin (-) needs -o FILE, -o DIR or -o - for stdout")
        return OutputPlan(Destination.NEXT_TO_INPUT, suffix=suffix, format=fmt)
    if output == "-":
        if not expansion.single_file:
            raise UsageError("-o - (stdout) takes exactly one input file or - (stdin)")
        return OutputPlan(Destination.STDOUT, suffix=suffix, format=fmt)
    path = location(output)
    as_folder = output.endswith(("/", os.sep)) or path.is_dir()
    if expansion.single_file and not as_folder:
        wanted = format_from_suffix(path.name)
        if is_video(path.name):  # a clip's -o FILE: the runner checks the input is a clip
            return OutputPlan(Destination.FILE, path, suffix=suffix, format=fmt)
        if wanted is None and path.suffix:
            raise UsageError(
                f"-o {output}: cannot write {path.suffix} files; use {OUTPUT_EXTENSIONS_TEXT} "
                f"(or {VIDEO_EXTENSIONS_TEXT} for a video)"
            )
        if wanted is not None and fmt not in (OutputFormat.SAME, wanted):
            raise UsageError(
                f"-o {output} asks for {wanted.name} but --format is {fmt.value}; "
                "make them agree or drop one"
            )
        return OutputPlan(Destination.FILE, path, suffix=suffix, format=wanted or fmt)
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"-o {output} is a file, but with several inputs (or a folder or glob) "
            "-o must be a folder"
        )
    return OutputPlan(Destination.DIRECTORY, path, suffix=suffix, format=fmt)
