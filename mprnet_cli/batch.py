"""Batches: turn INPUT arguments into jobs, name their outputs, and run them with overlapped I/O.

No rich and no typer here (the CLI owns messages), and no torch at import time: a resumed
run whose outputs all exist never imports torch or loads weights.

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

The runner (`run_batch`)
------------------------
One thread decodes ahead (`prefetch` images) and one encodes and writes behind (`pending`
images) while the calling thread runs the network, so memory is bounded by a few images
whatever the batch size. Results come back in input order. On KeyboardInterrupt the queues
are cancelled and a write already in progress finishes (writes are atomic: the output is
complete or absent); temporary files left by a killed run are removed when a later run
reaches the same output, once they are `STALE_TEMP_SECONDS` old (a younger one may be
another mprnet process writing that output right now).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from mprnet_cli._stdio import write_stdout
from mprnet_cli.errors import MprnetError, OutputError, OutputExistsError, UsageError
from mprnet_cli.imageio import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageInfo,
    OutputFormat,
    UIntArray,
    encode_image,
    extension_for,
    format_from_suffix,
    output_notes,
    read_image,
    resolve_format,
    temp_target,
    write_image,
)

if TYPE_CHECKING:
    from mprnet_cli.pipeline import RunStats

__all__ = [
    "IMAGE_EXTENSIONS",
    "JSON_FIELDS",
    "STALE_TEMP_SECONDS",
    "STDOUT",
    "Callbacks",
    "Destination",
    "Expansion",
    "Job",
    "OutputPlan",
    "Result",
    "Status",
    "expand_inputs",
    "output_name",
    "plan_outputs",
    "run_batch",
]

#: What a folder or glob contributes: every still/first-frame format Pillow decodes well.
_EXTENSION_WORDS: Final = (
    ".jpg .jpeg .jpe .jfif .png .apng .webp .tif .tiff .bmp .dib .gif .ppm .pgm .pbm .pnm "
    ".tga .jp2 .j2k .jpf .jpx .avif .qoi .pcx .sgi .ico"
)
IMAGE_EXTENSIONS: Final = frozenset(_EXTENSION_WORDS.split())
STDIN_ARG: Final = "-"
_GLOB_CHARS: Final = frozenset("*?[")
#: A write's temporary file lives for the seconds it takes to write and fsync the encoded
#: bytes; one whose last change is older than this was left by a killed process.
STALE_TEMP_SECONDS: Final = 600.0

T = TypeVar("T")


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One input. `source` None is stdin; `error` set means it failed before it started."""

    source: Path | None
    root: Path | None = None  # the folder it was found under: mirrored below -o DIR
    explicit: bool = True  # named by the user (not found in a folder or by a glob)
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
    def relative(self) -> Path:
        """The source below its root: the sub-path that `-o DIR` reproduces."""
        if self.source is None:
            return Path(self.stem)
        if self.root is not None:
            try:
                return self.source.relative_to(self.root)
            except ValueError:
                pass
        return Path(self.source.name)


@dataclass(frozen=True)
class Expansion:
    """The jobs for a command line; `single_file` when it named exactly one file (or stdin)."""

    jobs: list[Job]
    single_file: bool


def _is_pattern(arg: str) -> bool:
    return any(c in _GLOB_CHARS for c in arg) and not os.path.lexists(arg)


def _pattern_root(pattern: str) -> Path:
    """The fixed leading folders of a glob: what `-o DIR` mirrors below."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if any(c in _GLOB_CHARS for c in part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def _key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


class _Scanner:
    """Finds images in folders and glob matches, with the filters from the module docstring."""

    def __init__(self, recursive: bool, suffix: str, exclude: Path | None) -> None:
        self.recursive = recursive
        self.suffix = suffix
        self.exclude = _key(exclude) if exclude is not None else None

    def wanted(self, path: Path) -> bool:
        name = path.name
        if name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            return False
        if self.suffix and path.stem.endswith(self.suffix):
            return False  # one of our outputs: a rerun resumes instead of restoring it
        return path.is_file()

    def folder(self, folder: Path, root: Path) -> list[Job]:
        jobs: list[Job] = []
        for top, dirs, files in os.walk(folder):
            here = Path(top)
            dirs[:] = sorted(
                d
                for d in dirs
                if self.recursive
                and not d.startswith(".")
                and (self.exclude is None or _key(here / d) != self.exclude)
            )
            jobs.extend(
                Job(here / f, root=root, explicit=False)
                for f in sorted(files)
                if self.wanted(here / f)
            )
        return jobs


def expand_inputs(
    args: Sequence[str],
    *,
    recursive: bool = False,
    suffix: str = "",
    exclude: Path | None = None,
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
        path = Path(arg)
        if path.is_dir():
            found = scanner.folder(path, root=path)
            if not found:
                hint = "" if recursive else " (subfolders are searched only with -r/--recursive)"
                found = [Job(path, error=f"no images in this folder{hint}")]
            add(found)
        elif not _is_pattern(arg):
            add([Job(path, root=path.parent)])
            single_file = len(args) == 1
        else:
            root = _pattern_root(arg)
            matched: list[Job] = []
            # Path.glob cannot take absolute patterns; the shell's semantics are glob.glob's.
            for match in sorted(glob.glob(arg, recursive=True)):  # noqa: PTH207
                mpath = Path(match)
                if mpath.is_dir():
                    matched.extend(scanner.folder(mpath, root=root))
                elif scanner.wanted(mpath):
                    matched.append(Job(mpath, root=root, explicit=False))
            if not matched:
                matched = [Job(None, error="no image files match this pattern", label_override=arg)]
            add(matched)
    return Expansion(jobs, single_file)


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
Target = Path | _Stdout


def output_name(job: Job, suffix: str, fmt: OutputFormat) -> str:
    """`<stem><suffix><ext>`, keeping the input's extension spelling when the format is its own."""
    own = job.source.suffix if job.source is not None else ""
    ext = own if own and format_from_suffix(f"x{own}") is fmt else extension_for(fmt)
    return f"{job.stem}{suffix}{ext}"


_MAGIC: Final = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)


def _sniff_container(path: Path) -> str | None:
    """Pillow's format name for the file's magic bytes ("OTHER" when none of ours), None if unreadable."""
    try:
        with path.open("rb") as fp:
            head = fp.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "OTHER")


def _probe_info(container: str) -> ImageInfo:
    # `same` depends on the container alone: JPEG and WebP inputs always decode to 8-bit
    # colour, and PNG/TIFF hold any result (imageio's module docstring). The run re-resolves
    # after decoding anyway; this only lets existing outputs be skipped without a decode.
    return ImageInfo(
        format=container,
        mode="RGB",
        bit_depth=8,
        grayscale=False,
        has_alpha=False,
        icc_profile=None,
        exif=None,
        dpi=None,
    )


@dataclass(frozen=True)
class OutputPlan:
    """Where each job's output goes and in which format (`format` may be SAME)."""

    destination: Destination
    path: Path | None = None  # the folder (DIRECTORY) or file (FILE)
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

    def predict(self, job: Job) -> Path | None:
        """The output path before decoding, when it can be known for certain; else None."""
        if self.destination is Destination.STDOUT or job.source is None:
            return None
        if self.destination is Destination.FILE:
            return self.path
        fmt = self.format
        if fmt is OutputFormat.SAME:
            container = _sniff_container(job.source)
            if container is None:
                return None
            fmt = resolve_format(OutputFormat.SAME, _probe_info(container))
        target = self.target(job, fmt)
        return target if isinstance(target, Path) else None


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
    path = Path(output)
    as_folder = output.endswith(("/", os.sep)) or path.is_dir()
    if expansion.single_file and not as_folder:
        wanted = format_from_suffix(path)
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
        """Exactly the `JSON_FIELDS`, in that order, so the schema is declared in one place."""
        converted: dict[str, Any] = {
            "status": self.status.value,
            "seconds": None if self.seconds is None else round(self.seconds, 4),
            "warnings": list(self.warnings),
        }
        return {
            name: converted[name] if name in converted else getattr(self, name)
            for name in JSON_FIELDS
        }


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
    finished: Callable[[Result], None] | None = None  # just before the result is yielded


# --------------------------------------------------------------------------- runner


@dataclass
class _Prepared:
    """A job after the decode thread looked at it."""

    job: Job
    decoded: DecodedImage | None = None
    error: str | None = None
    skip_decode: bool = False  # its predicted output exists: no decode was needed
    seconds: float = 0.0


class _Inline:
    """Executor stand-in that runs work at once: the sequential baseline (0 prefetch/pending)."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        return _run_now(fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _run_now(fn: Callable[..., T], /, *args: Any) -> Future[T]:
    fut: Future[T] = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as exc:
        fut.set_exception(exc)
    return fut


def _done(result: Result) -> Future[Result]:
    fut: Future[Result] = Future()
    fut.set_result(result)
    return fut


def _reason(exc: BaseException, label: str) -> str:
    """The error message without the leading "<label>: " (the CLI adds it back once)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.removeprefix(f"{label}: ")


def _prefixed(note: str, label: str) -> str:
    return note if note.startswith(label) else f"{label}: {note}"


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


@dataclass
class _Runner:
    restorer: RestorerLike | Callable[[], RestorerLike]
    plan: OutputPlan
    overwrite: bool = False
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    prefetch: int = 1
    pending: int = 1
    callbacks: Callbacks = field(default_factory=Callbacks)
    stdin: BinaryIO | None = None
    stdout: BinaryIO | None = None
    raise_unexpected: bool = False
    _loaded: RestorerLike | None = None
    _claims: dict[str, str] = field(default_factory=dict)
    _inputs: set[str] = field(default_factory=set)
    _sweeper: _TempSweeper = field(default_factory=_TempSweeper)

    # -- helpers
    def _get_restorer(self) -> RestorerLike:
        """Load weights at most once, and only when a job really needs the network."""
        if self._loaded is None:
            r = self.restorer
            self._loaded = r if hasattr(r, "restore_rgb") else r()
        return self._loaded

    def _unexpected(self, exc: Exception, what: str) -> str:
        if self.raise_unexpected:
            raise exc
        return (
            f"unexpected {type(exc).__name__} while {what}: {exc}. This is a bug in mprnet: "
            "rerun with MPRNET_DEBUG=1 for the traceback and report it"
        )

    # -- decode thread
    def _prepare(self, job: Job, *, predict: bool = True) -> _Prepared:
        if job.error is not None:
            return _Prepared(job, error=job.error)
        start = time.perf_counter()
        source = job.source
        if predict and source is not None and not self.overwrite and source.is_file():
            predicted = self.plan.predict(job)
            if predicted is not None and predicted.exists() and _key(predicted) != _key(source):
                return _Prepared(job, skip_decode=True)
        try:
            decoded = self._decode(job)
        except MprnetError as exc:
            return _Prepared(job, error=_reason(exc, job.display))
        except Exception as exc:
            return _Prepared(job, error=self._unexpected(exc, "decoding"))
        return _Prepared(job, decoded=decoded, seconds=time.perf_counter() - start)

    def _decode(self, job: Job) -> DecodedImage:
        if job.source is None:
            stream = self.stdin if self.stdin is not None else sys.stdin.buffer
            return read_image(stream.read(), name=job.display, max_pixels=self.max_pixels)
        return read_image(job.source, name=job.label, max_pixels=self.max_pixels)

    # -- main thread
    def _failed(self, job: Job, error: str, output: Target | None = None, **kw: Any) -> Result:
        out = None if output is None else str(output)
        return Result(job.label, out, Status.FAILED, error=error, **kw)

    def _check_target(self, job: Job, target: Path) -> Result | None:
        """Collisions, input == output and existing outputs; None when the job may write."""
        key = _key(target)
        self._sweeper.sweep(target)
        earlier = self._claims.get(key)
        if earlier is not None:
            return self._failed(
                job,
                f"its output {target} is also the output of {earlier}; use -o with "
                "separate folders or --suffix to tell them apart",
                target,
            )
        self._claims[key] = job.label
        if job.source is not None and key == _key(job.source):
            return self._failed(
                job, "the output would replace the input; change --suffix or -o", target
            )
        if target.is_dir():
            return self._failed(job, f"the output {target} is a folder", target)
        if not self.overwrite and os.path.lexists(target):
            return Result(job.label, str(target), Status.SKIPPED)
        if key in self._inputs:
            return self._failed(
                job,
                f"its output {target} is another input of this run; change --suffix or -o",
                target,
            )
        return None

    def _process(
        self, prepared: _Prepared, encoder: ThreadPoolExecutor | _Inline
    ) -> Future[Result]:
        job = prepared.job
        if prepared.error is not None:
            return _done(self._failed(job, prepared.error))
        decoded = prepared.decoded
        if decoded is None:  # skip_decode: settle the predicted name with the usual checks
            predicted = self.plan.predict(job)
            if predicted is not None:
                verdict = self._check_target(job, predicted)
                if verdict is not None:
                    return _done(verdict)
                del self._claims[_key(predicted)]  # claimed again below, once resolved
            # The output vanished since the decode thread looked: decode after all.
            prepared = self._prepare(job, predict=False)
            if prepared.decoded is None:
                return _done(self._failed(job, prepared.error or "cannot decode"))
            decoded = prepared.decoded
        target, fmt = self.plan.resolve(job, decoded.info)
        width, height = decoded.width, decoded.height
        if isinstance(target, Path):
            verdict = self._check_target(job, target)
            if verdict is not None:
                return _done(_replace(verdict, width=width, height=height))

        restorer = self._get_restorer()
        if self.callbacks.started is not None:
            self.callbacks.started(job, decoded.width, decoded.height)
        warned: list[str] = []
        try:
            restored, stats = restorer.restore_rgb(
                decoded.rgb, progress=self.callbacks.tiles, warn=warned.append
            )
        except MprnetError as exc:
            error = _reason(exc, job.display)
            return _done(self._failed(job, error, width=width, height=height))
        except Exception as exc:
            error = self._unexpected(exc, "restoring")
            return _done(self._failed(job, error, width=width, height=height))
        info, alpha = decoded.info, decoded.alpha
        notes = (
            *info.notes,
            *output_notes(info, fmt, has_alpha=alpha is not None),
            *warned,
            *stats.notes,
        )
        done = Result(
            job.label,
            str(target),
            Status.OK,
            seconds=prepared.seconds + stats.seconds,
            device=stats.device,
            backend=stats.backend,
            precision=stats.precision,
            tiles=stats.tiles,
            warnings=tuple(dict.fromkeys(_prefixed(n, job.display) for n in notes)),
            width=width,
            height=height,
        )
        return encoder.submit(self._write, done, target, fmt, restored, info, alpha)

    # -- encode thread
    def _write(
        self,
        done: Result,
        target: Target,
        fmt: OutputFormat,
        restored: npt.NDArray[np.float32],
        info: ImageInfo,
        alpha: UIntArray | None,
    ) -> Result:
        start = time.perf_counter()
        label = done.input
        try:
            if isinstance(target, Path):
                if self.plan.destination is Destination.DIRECTORY:
                    _make_folder(target.parent)
                write_image(
                    target,
                    restored,
                    info,
                    fmt,
                    alpha=alpha,
                    jpeg_quality=self.jpeg_quality,
                    overwrite=self.overwrite,
                )
            else:
                data = encode_image(
                    restored, info, fmt, alpha=alpha, jpeg_quality=self.jpeg_quality
                )
                _write_stdout(data, self.stdout)
        except OutputExistsError:  # appeared since the check (another process): not ours
            return _replace(done, status=Status.SKIPPED, seconds=None, device=None, tiles=None)
        except MprnetError as exc:
            return _replace(done, status=Status.FAILED, error=_reason(exc, label), seconds=None)
        except Exception as exc:
            return _replace(
                done, status=Status.FAILED, error=self._unexpected(exc, "writing"), seconds=None
            )
        seconds = (done.seconds or 0.0) + time.perf_counter() - start
        return _replace(done, seconds=seconds)

    # -- the loop
    def run(self, jobs: Sequence[Job]) -> Generator[Result, None, None]:
        self._inputs = {_key(j.source) for j in jobs if j.source is not None and j.error is None}
        decoder: ThreadPoolExecutor | _Inline = (
            ThreadPoolExecutor(1, thread_name_prefix="mprnet-decode")
            if self.prefetch
            else _Inline()
        )
        encoder: ThreadPoolExecutor | _Inline = (
            ThreadPoolExecutor(1, thread_name_prefix="mprnet-encode") if self.pending else _Inline()
        )
        todo = iter(jobs)
        ahead: deque[Future[_Prepared]] = deque()
        outbox: deque[Future[Result]] = deque()

        def feed(limit: int) -> None:
            while len(ahead) < limit:
                job = next(todo, None)
                if job is None:
                    return
                # stdin is read on this thread, so Ctrl-C while waiting for it is prompt
                ahead.append(
                    _run_now(self._prepare, job)
                    if job.source is None and job.error is None
                    else decoder.submit(self._prepare, job)
                )

        try:
            while True:
                feed(1)
                if not ahead:
                    break
                prepared = ahead.popleft().result()
                feed(self.prefetch)  # decode the next ones while this one is restored
                outbox.append(self._process(prepared, encoder))
                del prepared  # drop the decoded pixels before the next restore
                while sum(not f.done() for f in outbox) > self.pending:
                    next(f for f in outbox if not f.done()).exception()
                while outbox and outbox[0].done():
                    yield self._emit(outbox.popleft().result())
            while outbox:
                yield self._emit(outbox.popleft().result())
        finally:
            # Ctrl-C or an error: queued work is dropped, a write in progress completes.
            decoder.shutdown(wait=True, cancel_futures=True)
            encoder.shutdown(wait=True, cancel_futures=True)

    def _emit(self, result: Result) -> Result:
        if self.callbacks.finished is not None:
            self.callbacks.finished(result)
        return result


def _replace(result: Result, **changes: Any) -> Result:
    return dataclasses.replace(result, **changes)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the folder {folder} ({exc.strerror or exc}); choose another -o"
        ) from None


def _write_stdout(data: bytes, stream: BinaryIO | None) -> None:
    try:
        write_stdout(data, stream)
    except BrokenPipeError:
        raise OutputError("stdout was closed before the image was written") from None


def run_batch(
    jobs: Sequence[Job],
    restorer: RestorerLike | Callable[[], RestorerLike],
    plan: OutputPlan,
    *,
    overwrite: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    prefetch: int = 1,
    pending: int = 1,
    callbacks: Callbacks | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    raise_unexpected: bool = False,
) -> Generator[Result, None, None]:
    """Restore `jobs`, yielding one `Result` per job in order.

    `restorer` is a Restorer or a zero-argument factory, called once at the first job that
    needs the network (so a run whose outputs all exist loads no weights). `prefetch`
    decoded images wait ahead and `pending` restored images wait to be written (0 and 0:
    everything on the calling thread, the sequential baseline). `max_pixels` guards against
    decompression bombs (None: no limit). Per-file problems become
    failed results; errors that concern the whole run (weights, devices) propagate.
    `raise_unexpected` lets bugs raise instead of failing the file (MPRNET_DEBUG).

    A caller that may stop early (an error, Ctrl-C between results) should `close()` the
    generator (`contextlib.closing`): that stops the threads at once, dropping queued work
    and letting a write in progress finish, instead of whenever it is garbage-collected.
    """
    if prefetch < 0 or pending < 0:
        raise ValueError("prefetch and pending must be >= 0")
    runner = _Runner(
        restorer,
        plan,
        overwrite=overwrite,
        jpeg_quality=jpeg_quality,
        max_pixels=max_pixels,
        prefetch=prefetch,
        pending=pending,
        callbacks=callbacks or Callbacks(),
        stdin=stdin,
        stdout=stdout,
        raise_unexpected=raise_unexpected,
    )
    return runner.run(jobs)
