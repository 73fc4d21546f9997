"""The job planner: INPUT arguments -> jobs, output names, and the per-job rules every runner applies.

A runner (the threaded one in `mprnet_cli.batch`, the Ray one in `mprnet_cli.runners.ray`)
is an executor: it decodes, restores and writes. What the inputs are, what each output is
called, whether it may be written (collisions, input == output, an existing output without
--overwrite, an unwritable folder), which temporary files a killed run left for it, and
what its `Result` record says are decided here, once, so the runners cannot drift apart.
No threads, no Ray, no torch, no messages: plain bookkeeping (and the file-system looks it
needs). The `Planner` holds one run's state (claimed outputs, checked folders).

Inputs (`expand_inputs`)
------------------------
* A file named explicitly is always attempted, whatever its extension (a missing one fails
  with a clear message). `-` is stdin and must be the only INPUT.
* A folder contributes its direct images; with `recursive` also those of its subfolders.
  Images are recognised by extension (`IMAGE_EXTENSIONS`, case-insensitive). Hidden files and
  folders (leading dot), the output folder, and files that look like our own outputs (stem
  ending with the suffix) are left out, so that running the same command again resumes
  instead of restoring the outputs.
* An argument containing `*`, `?` or `[` that is not an existing path is a glob, expanded
  here with `glob.glob(recursive=True)` (so `**` works) when the shell did not; its matches
  are filtered like a folder's files, and folders it matches are scanned like folders.
* Duplicates (same real path) are dropped; order is argument order, then sorted paths.
* An object-store URI (`s3://`, `gs://`, `abfs://`: a `locations.StorePath`) follows the
  same rules: a prefix is a folder, `-r` descends, globs are matched segment by segment,
  the same extension filter. Only the Ray engine reads and writes them.

Outputs (`plan_outputs`, `OutputPlan`)
--------------------------------------
* Names are `<stem><suffix><ext>`. `ext` comes from the written format; when that is the
  input's own format the input's spelling is kept (`IMG_1.JPG` -> `IMG_1_derained.JPG`),
  otherwise `.png`, `.jpg`, `.webp` or `.tif`.
* No `-o`: next to each input. `-o DIR`: the tree of each input below the folder it was
  found in (a folder argument, a glob's fixed leading folders, or a file's own folder) is
  mirrored under DIR. `-o FILE` (one file or stdin INPUT only): exactly that name, its
  format from its extension. `-o -`: stdout (one file or stdin INPUT only).
* With `--format same` the name depends on the decoded image; it is predicted from the
  file's magic bytes so existing outputs are skipped before decoding, and settled after.

Rules per job (`Planner`)
-------------------------
* `check(job, target)`: the output is claimed by one job only (a second one fails naming
  the first), never the input itself, another input, a folder or a special file; an
  existing output is skipped unless --overwrite; temporary files a killed run left for it
  are removed once `STALE_TEMP_SECONDS` old.
* `folder_problem(folder)`: the output folder is created (-o DIR) and test-written once, so
  an unwritable output fails before any restore time is spent.
* `screen(job)`: the rules applied to the output predicted before decoding, for runners
  that plan everything up front (Ray).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import glob
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from mprnet_cli._stdio import name_bytes, valid_text
from mprnet_cli.errors import OutputError, UsageError
from mprnet_cli.imageio import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    OutputFormat,
    check_writable_folder,
    extension_for,
    format_from_suffix,
    output_notes,
    predict_format,
    resolve_format,
    temp_target,
)
from mprnet_cli.locations import StorePath, Where, glob_store, is_uri, location, walk_order

if TYPE_CHECKING:
    from mprnet_cli.pipeline import RunStats

__all__ = [
    "IMAGE_EXTENSIONS",
    "JSON_FIELDS",
    "STALE_TEMP_SECONDS",
    "STDIN_ARG",
    "STDOUT",
    "Callbacks",
    "Destination",
    "Expansion",
    "Job",
    "OutputPlan",
    "Planner",
    "RestorerLike",
    "Result",
    "Screened",
    "Status",
    "Target",
    "expand_inputs",
    "failed",
    "failed_at_write",
    "image_notes",
    "make_output_folder",
    "output_name",
    "plan_outputs",
    "reason",
    "restored",
    "skipped_at_write",
    "unexpected",
]

STDIN_ARG: Final = "-"
_GLOB_CHARS: Final = frozenset("*?[")
#: A write's temporary file lives for the seconds it takes to write and fsync the encoded
#: bytes; one whose last change is older than this was left by a killed process.
STALE_TEMP_SECONDS: Final = 600.0


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One input. `source` None is stdin; `error` set means it failed before it started."""

    source: Where | None
    root: Where | None = None  # the folder it was found under: mirrored below -o DIR
    error: str | None = None
    label_override: str | None = None  # what to call it when there is no source

    @property
    def label(self) -> str:
        """How the input is named to the user (the argument, or the path as found)."""
        if self.label_override is not None:
            return self.label_override
        return STDIN_ARG if self.source is None else str(self.source)

    @property
    def display(self) -> str:
        """The name in messages: the label, or "<stdin>"."""
        return "<stdin>" if self.source is None and self.label_override is None else self.label

    @property
    def stem(self) -> str:
        return "stdin" if self.source is None else self.source.stem

    @property
    def relative(self) -> PurePath:
        """The source below its root: the sub-path that `-o DIR` reproduces."""
        if self.source is None:
            return Path(self.stem)
        if self.root is not None:
            try:
                return self.source.relative_to(self.root)  # type: ignore[arg-type]
            except ValueError:
                pass
        return Path(self.source.name)


@dataclass(frozen=True)
class Expansion:
    """The jobs for a command line; `single_file` when it named exactly one file (or stdin)."""

    jobs: list[Job]
    single_file: bool
    warnings: tuple[str, ...] = ()  # entries skipped because they could not be looked at


def _is_pattern(arg: str) -> bool:
    return any(c in _GLOB_CHARS for c in arg) and (is_uri(arg) or not os.path.lexists(arg))


def _pattern_root(pattern: str) -> Path:
    """The fixed leading folders of a glob: what `-o DIR` mirrors below."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if any(c in _GLOB_CHARS for c in part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def _key(path: Where) -> str:
    if isinstance(path, StorePath):
        return str(path)
    return os.path.normcase(os.path.realpath(path))


def _why_not(exc: OSError) -> str:
    """An OSError met while looking at an input, as a reason a user can act on."""
    if isinstance(exc, PermissionError):
        return "permission denied; check the permissions of it and of the folders above it"
    return f"cannot read ({exc.strerror or exc})"


def _kind(path: Where) -> str | OSError:
    """ "dir", "file" or "other" (missing included), or the error that prevented looking."""
    if isinstance(path, StorePath):
        return path.kind()
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "other"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "other"
        return exc
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


class _Scanner:
    """Finds images in folders and glob matches, with the filters from the module docstring.

    Entries it cannot look at (an unreadable subfolder, a broken link named like an image)
    are skipped with a line in `warnings`, never silently."""

    def __init__(self, recursive: bool, suffix: str, exclude: Where | None) -> None:
        self.recursive = recursive
        self.suffix = suffix
        self.exclude = _key(exclude) if exclude is not None else None
        self.warnings: list[str] = []

    def named(self, path: Where) -> bool:
        """The name rules alone: an image's extension, not hidden, not one of our outputs."""
        name = path.name
        if name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            return False
        # one of our outputs: a rerun resumes instead of restoring it
        return not (self.suffix and path.stem.endswith(self.suffix))

    def wanted(self, path: Path) -> bool:
        if not self.named(path):
            return False
        kind = _kind(path)
        if isinstance(kind, OSError):
            self.warnings.append(f"{path}: skipped: {_why_not(kind)}")
            return False
        if kind == "other" and path.is_symlink():
            self.warnings.append(f"{path}: skipped: a broken symbolic link")
        return kind == "file"

    def folder(self, folder: Where, root: Where) -> list[Job]:
        """The folder's images; a folder that cannot be listed at all is one failed job."""
        if isinstance(folder, StorePath):
            return self.prefix(folder, root)
        jobs: list[Job] = []
        unreadable: list[OSError] = []

        def skipped(exc: OSError) -> None:
            where = Path(exc.filename) if exc.filename else folder
            if _key(where) == _key(folder):
                unreadable.append(exc)
            else:
                self.warnings.append(f"{where}: folder skipped: {_why_not(exc)}")

        for top, dirs, files in os.walk(folder, onerror=skipped):
            here = Path(top)
            dirs[:] = sorted(
                d
                for d in dirs
                if self.recursive
                and not d.startswith(".")
                and (self.exclude is None or _key(here / d) != self.exclude)
            )
            jobs.extend(Job(here / f, root=root) for f in sorted(files) if self.wanted(here / f))
        if unreadable and not jobs:
            return [Job(folder, error=f"cannot list this folder: {_why_not(unreadable[0])}")]
        return jobs

    def prefix(self, folder: StorePath, root: Where) -> list[Job]:
        """`folder` for an object store: one listing; hidden and excluded prefixes left out."""
        try:
            found = folder.listing(self.recursive)
        except OSError as exc:
            return [Job(folder, error=f"cannot list this folder: {_why_not(exc)}")]
        excluded = str(self.exclude) + "/" if self.exclude is not None else None
        files = [
            p
            for p, kind in found
            if kind == "file"
            and self.named(p)
            and not any(d.startswith(".") for d in p.relative_to(folder).parts[:-1])
            and (excluded is None or not str(p).startswith(excluded))
        ]
        return [Job(p, root=root) for p in walk_order(files, folder)]


def expand_inputs(
    args: Sequence[str],
    *,
    recursive: bool = False,
    suffix: str = "",
    exclude: Where | None = None,
) -> Expansion:
    """Files, folders, globs and `-` -> deduplicated jobs (see the module docstring).

    `exclude` is the output folder, never scanned for inputs. Arguments that yield nothing
    (an empty folder, a glob without matches) become failed jobs so they are reported.
    """
    if not args:
        raise UsageError("give at least one INPUT (a file, folder, glob or - for stdin)")
    if STDIN_ARG in args and len(args) > 1:
        raise UsageError("- (stdin) must be the only INPUT")
    scanner = _Scanner(recursive, suffix, exclude)
    jobs: list[Job] = []
    seen: set[str] = set()

    def add(found: Iterable[Job]) -> None:
        for job in found:
            if job.error is not None:
                jobs.append(job)
                continue
            key = STDIN_ARG if job.source is None else _key(job.source)
            if key not in seen:
                seen.add(key)
                jobs.append(job)

    single_file = False
    for arg in args:
        if arg == STDIN_ARG:
            add([Job(None)])
            single_file = True
            continue
        path = location(arg)
        kind = _kind(path)
        if isinstance(kind, OSError):  # e.g. inside a folder we may not enter
            add([Job(path, root=path.parent, error=_why_not(kind))])
            single_file = len(args) == 1
        elif kind == "dir":
            found = scanner.folder(path, root=path)
            if not found:
                hint = "" if recursive else " (subfolders are searched only with -r/--recursive)"
                found = [Job(path, error=f"no images in this folder{hint}")]
            add(found)
        elif not _is_pattern(arg):
            add([Job(path, root=path.parent)])
            single_file = len(args) == 1
        elif isinstance(path, StorePath):
            add(_store_matches(arg, scanner))
        else:
            root = _pattern_root(arg)
            matched: list[Job] = []
            # Path.glob cannot take absolute patterns; the shell's semantics are glob.glob's.
            for match in sorted(glob.glob(arg, recursive=True)):  # noqa: PTH207
                mpath = Path(match)
                if _kind(mpath) == "dir":
                    matched.extend(scanner.folder(mpath, root=root))
                elif scanner.wanted(mpath):
                    matched.append(Job(mpath, root=root))
            if not matched:
                matched = [Job(None, error="no image files match this pattern", label_override=arg)]
            add(matched)
    return Expansion(jobs, single_file, tuple(dict.fromkeys(scanner.warnings)))


def _store_matches(pattern: str, scanner: _Scanner) -> list[Job]:
    """A glob over an object store: matching objects, and matching prefixes as folders."""
    try:
        root, found = glob_store(pattern)
    except OSError as exc:
        return [Job(None, error=f"cannot list: {_why_not(exc)}", label_override=pattern)]
    matched: list[Job] = []
    for path, kind in found:
        if kind == "dir":
            matched.extend(scanner.prefix(path, root))
        elif scanner.named(path):
            matched.append(Job(path, root=root))
    return matched or [Job(None, error="no image files match this pattern", label_override=pattern)]


# --------------------------------------------------------------------------- outputs


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
        fmt = predict_format(source.head if isinstance(source, StorePath) else source, self.format)
        if fmt is None:
            return None
        target = self.target(job, fmt)
        return None if isinstance(target, _Stdout) else target


def plan_outputs(
    expansion: Expansion,
    output: str | None,
    *,
    suffix: str,
    fmt: OutputFormat = OutputFormat.SAME,
) -> OutputPlan:
    """Decide what `-o` means for these inputs (rules in the module docstring); UsageError if unusable."""
    if os.sep in suffix or "/" in suffix or suffix in (".", ".."):
        raise UsageError(f"--suffix {suffix!r} must not contain a path separator")
    has_stdin = any(j.source is None and j.error is None for j in expansion.jobs)
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
        if wanted is None and path.suffix:
            raise UsageError(
                f"-o {output}: cannot write {path.suffix} files; use .png, .jpg, .webp or .tif"
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


# --------------------------------------------------------------------------- results


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
    """Progress hooks, all called on the thread that iterates `run_batch`."""

    started: Callable[[Job, int, int], None] | None = None  # job, width, height: restore begins
    tiles: Callable[[int, int], None] | None = None  # done, total tiles of the current image
    # just before the result is yielded; also for results settled when the run is stopped
    # (Ctrl-C, SIGTERM, an error), which are then never yielded
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


def make_output_folder(folder: Path) -> None:
    """Create an output's folder (-o DIR mirrors the input tree) or fail with `OutputError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the folder {folder} ({exc.strerror or exc}); choose another -o"
        ) from None


class _TempSweeper:
    """Removes temporary files a killed run left for the outputs this run reaches.

    Each folder is listed once (so a folder of thousands of outputs costs one scan). Only
    files older than `max_age` seconds (by mtime, checked when their output is reached) go:
    a younger one may be another live process's write in progress, which would otherwise
    fail when it moves its vanished temp file into place.
    """

    def __init__(self, max_age: float = STALE_TEMP_SECONDS) -> None:
        self.max_age = max_age
        self._by_folder: dict[Path, dict[str, list[Path]]] = {}

    def sweep(self, target: Path) -> None:
        folder = target.parent
        temps = self._by_folder.get(folder)
        if temps is None:
            temps = {}
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    name = temp_target(entry.name)
                    if name is not None:
                        temps.setdefault(name, []).append(Path(entry.path))
            self._by_folder[folder] = temps
        for tmp in temps.pop(target.name, []):
            with contextlib.suppress(OSError):  # not ours to insist on; the output is unaffected
                if time.time() - tmp.lstat().st_mtime > self.max_age:
                    tmp.unlink()


@dataclass(frozen=True)
class Screened:
    """A job the planner let through, with the output it is to write (claimed)."""

    job: Job
    target: Where | None  # None: not predictable (unreadable file); decoding will say why


@dataclass
class Planner:
    """One run's claims and checks: the rules of the module docstring, for any runner."""

    plan: OutputPlan
    jobs: Sequence[Job]
    overwrite: bool = False
    max_temp_age: float = STALE_TEMP_SECONDS
    _claims: dict[str, str] = field(default_factory=dict)
    _inputs: set[str] = field(default_factory=set)
    _folders: dict[str, str | None] = field(default_factory=dict)  # folder -> why unwritable
    _sweeper: _TempSweeper = field(init=False)
    _listed: dict[StorePath, dict[StorePath, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._inputs = {
            _key(j.source) for j in self.jobs if j.source is not None and j.error is None
        }
        self._sweeper = _TempSweeper(self.max_temp_age)

    def exists_ahead(self, job: Job) -> bool:
        """Its predicted output exists already (and is not the input): no need to decode it.

        Only reads the file system, so a decode thread may ask; `check` settles it."""
        source = job.source
        if self.overwrite or source is None or not source.is_file():
            return False
        predicted = self.plan.predict(job)
        return predicted is not None and predicted.exists() and _key(predicted) != _key(source)

    def check(self, job: Job, target: Where) -> Result | None:
        """Collisions, input == output and existing outputs; None when the job may write.

        Claims `target` for `job` (a later job with the same output fails), and removes the
        stale temporary files a killed run left for it.
        """
        key = _key(target)
        if isinstance(target, StorePath):
            return self._check_object(job, target, key)
        self._sweeper.sweep(target)
        verdict = self._claim(job, target, key)
        if verdict is not None:
            return verdict
        if target.is_dir():
            return failed(job, f"the output {target} is a folder", target)
        if target.exists() and not target.is_file():
            return failed(
                job,
                f"the output {target} is not a regular file (a device, pipe or socket); "
                "give a file name, or -o - and redirect stdout",
                target,
            )
        if not self.overwrite and os.path.lexists(target):
            return Result(job.label, str(target), Status.SKIPPED)
        return self._another_input(job, target, key)

    def _claim(self, job: Job, target: Where, key: str) -> Result | None:
        """Claim `target` for `job`; the failure when another job or the input holds it."""
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
        return None

    def _another_input(self, job: Job, target: Where, key: str) -> Result | None:
        if key in self._inputs:
            return failed(
                job,
                f"its output {target} is another input of this run; change --suffix or -o",
                target,
            )
        return None

    def _check_object(self, job: Job, target: StorePath, key: str) -> Result | None:
        """`check` for an object store: no temp objects to sweep, no special files; each
        output prefix is listed once (not one request per output)."""
        verdict = self._claim(job, target, key)
        if verdict is not None:
            return verdict
        folder = target.parent
        if folder not in self._listed:
            try:
                self._listed[folder] = dict(folder.listing(recursive=False))
            except FileNotFoundError:
                self._listed[folder] = {}
            except OSError as exc:
                return failed(job, f"cannot list {folder}: {_why_not(exc)}", target)
        kind = self._listed[folder].get(target)
        if kind == "dir":
            return failed(job, f"the output {target} is a folder", target)
        if kind == "file" and not self.overwrite:
            return Result(job.label, str(target), Status.SKIPPED)
        return self._another_input(job, target, key)

    def release(self, target: Where) -> None:
        """Forget a claim (the runner claims the settled name again after decoding)."""
        self._claims.pop(_key(target), None)

    def folder_problem(self, folder: Where) -> str | None:
        """Why nothing can be written in `folder` (checked once per folder), else None."""
        if isinstance(folder, StorePath):  # prefixes need no creating: the bucket must exist
            folder = folder.bucket
        key = _key(folder)
        if key not in self._folders:
            if isinstance(folder, StorePath):
                self._folders[key] = folder.problem()
                return self._folders[key]
            try:
                check_writable_folder(folder, create=self.plan.destination is Destination.DIRECTORY)
                self._folders[key] = None
            except OutputError as exc:
                self._folders[key] = str(exc)
        return self._folders[key]

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
        if verdict is not None:
            return verdict
        problem = self.folder_problem(predicted.parent)
        if problem is not None:
            return failed(job, problem, predicted)
        return Screened(job, predicted)
