"""The `mprnet` command line: parsing, messages and exit codes only.

Heavy modules (torch, the model, image I/O) are imported inside commands so
that `mprnet --help` and `mprnet --version` stay instant.

Exit codes: 0 success, 1 failure (some inputs failed, weights problems),
2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional, TextIO

import typer

from mprnet_cli import __version__
from mprnet_cli.choices import (
    BackendChoice,
    EngineChoice,
    Ensemble,
    ModelChoice,
    OutputFormat,
    Precision,
    device_spec,
)
from mprnet_cli.runners import RaySettings
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from rich.progress import Progress

    from mprnet_cli.api import Restorer
    from mprnet_cli.errors import MprnetError
    from mprnet_cli.jobs import Job, Result

DEBUG_ENV = "MPRNET_DEBUG"
INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's convention

app = typer.Typer(
    name="mprnet",
    help="Remove rain, motion blur and noise from photos with MPRNet (Zamir et al., CVPR 2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's help renderer alone costs more import time than the
    # rest of `mprnet --help` together.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(
    help="List, download, import and locate network weights.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(weights_app, name="weights")


# --------------------------------------------------------------------------- messages


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def _plain(text: str) -> str:
    """One line whatever the text holds: a file name with a newline or an escape sequence
    can neither forge an `mprnet: ...` line nor drive the terminal."""
    from mprnet_cli._stdio import printable

    return printable(text.strip())


def say(message: str, *, quiet: bool = False) -> None:
    """A human message: always stderr, so stdout stays clean for data."""
    if not quiet:
        print(_plain(message), file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"mprnet: error: {_plain(message)}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Map typed errors to one stderr line and their exit code (traceback only in debug)."""
    from mprnet_cli.errors import (
        DISK_FULL_ERRNOS,
        MprnetError,
        Terminated,
        describe_os_error,
    )

    try:
        yield
    except typer.Exit:
        raise
    except MprnetError as exc:
        if _debug():
            raise
        fail(str(exc), _exit_code(exc))
    except KeyboardInterrupt as exc:
        if _debug():
            raise
        if isinstance(exc, Terminated):
            fail("terminated (SIGTERM)", Terminated.exit_code)
        fail("interrupted", INTERRUPTED_EXIT)
    except Exception as exc:
        if _debug():
            raise
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            fail(describe_os_error(exc))  # a user-facing condition wherever it strikes
        fail(
            f"unexpected {type(exc).__name__}: {exc}. This is a bug in mprnet: rerun with "
            f"{DEBUG_ENV}=1 for the traceback and report it"
        )


def _exit_code(exc: MprnetError) -> int:
    return int(getattr(exc, "exit_code", 1))


def _version(value: bool) -> None:
    if value:
        print(f"mprnet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Remove rain, motion blur and noise from photos with MPRNet."""


# --------------------------------------------------------------------------- shared options

OutputOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional at runtime on 3.10
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help="Output file for one input, else a folder that mirrors the input tree; - for "
        "stdout (default: next to each input).",
        show_default=False,
    ),
]
WeightsOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--weights",
        "-w",
        help="Weights file (.pth/.pt/.safetensors) to use instead of the task's.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    ModelChoice,
    typer.Option("--model", "-m", help="Which weights when no file is given."),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        "-d",
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:N or mps (auto picks a usable GPU).",
    ),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        envvar="MPRNET_PRECISION",
        help="Arithmetic precision (auto: bf16 on CUDA GPUs and on CPUs with native bf16, "
        "else fp32).",
    ),
]
BackendOpt = Annotated[
    BackendChoice,
    typer.Option(
        "--backend",
        envvar="MPRNET_BACKEND",
        help="Inference engine (auto: OpenVINO on the CPU when installed, else PyTorch).",
    ),
]
TileOpt = Annotated[
    str,
    typer.Option(
        "--tile",
        "-t",
        metavar="N",
        help="Tile size in pixels (multiple of 8), 0 for one pass, or auto.",
    ),
]
OverlapOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--tile-overlap",
        min=0,
        metavar="N",
        help="Overlap between tiles in pixels, less than --tile (default: 32, less for "
        "smaller tiles).",
        show_default=False,
    ),
]
TileBatchOpt = Annotated[
    int, typer.Option("--tile-batch", metavar="N", min=1, help="Tiles per forward pass (GPU).")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", "-f", help="Replace existing outputs.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
TaskArg = Annotated[Task, typer.Argument(metavar="TASK", help="derain, deblur or denoise.")]
TasksArg = Annotated[
    list[Task] | None, typer.Argument(metavar="TASK", help="Tasks (default: all).")
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the network: faster per pixel on GPUs for large batches, but the "
        "first image pays the compilation (minutes on a CPU).",
    ),
]
StrengthOpt = Annotated[
    float,
    typer.Option(
        "--strength",
        min=0.0,
        max=1.0,
        help="Blend the result with the input: 1 fully restored, 0 the input unchanged "
        "(for textures the network smooths too much).",
    ),
]
EnsembleOpt = Annotated[
    Ensemble,
    typer.Option(
        "--ensemble",
        help="Average over flipped/rotated copies: 1 off, 2 the input and its left-right "
        "mirror, 8 all rotations and mirrors (2x / 8x the time).",
    ),
]
HideSplitLinesOpt = Annotated[
    bool,
    typer.Option(
        "--hide-split-lines",
        help="Three shifted passes blended away from the network's split lines (tile and "
        "image centre rows/columns): 3-5x the time.",
    ),
]
ThreadsOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--threads",
        metavar="N",
        min=1,
        help="CPU threads for the network (default: one per core).",
        show_default=False,
    ),
]


def parse_tile(value: str) -> int | None:
    text = value.strip().lower()
    if text == "auto":
        return None
    try:
        tile = int(text)
    except ValueError:
        raise typer.BadParameter(
            f"expected a number of pixels, 0 or auto, got {value!r}", param_hint="--tile"
        ) from None
    if tile != 0 and (tile < 8 or tile % 8):
        raise typer.BadParameter(
            "must be 0, auto or a multiple of 8 (at least 8)", param_hint="--tile"
        )
    return tile


# --------------------------------------------------------------------------- restore commands

RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Also restore the images in subfolders.")
]
SuffixOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--suffix",
        metavar="TEXT",
        help="Added to output names: <stem><suffix><ext> (default: _<task>ed, e.g. _derained).",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        metavar="FORMAT",
        help="png, jpg, webp, tiff, or same: the input's format where it can hold the result, "
        "else png.",
    ),
]
JpegQualityOpt = Annotated[
    int,
    typer.Option(
        "--jpeg-quality", metavar="Q", min=1, max=100, help="JPEG and WebP quality (1-100)."
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="One JSON object per input on stdout; messages stay on stderr."),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        metavar="N",
        min=0,
        help="Refuse images with more pixels than this (decompression bombs); 0: no limit.",
    ),
]

EngineOpt = Annotated[
    EngineChoice,
    typer.Option(
        "--engine",
        help="local: this machine; ray: a Ray cluster (pip install 'mprnet-cli[ray]').",
    ),
]
RayAddressOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join with --engine ray (default: RAY_ADDRESS, the cluster "
        "`ray start` made here, else a new local one).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--workers",
        metavar="N",
        min=1,
        help="Network actors with --engine ray (default: one per GPU; CPU-only: CPUs / 4).",
        show_default=False,
    ),
]
GpusPerWorkerOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--gpus-per-worker",
        metavar="F",
        min=0.0,
        help="GPUs per network actor with --engine ray; fractions share a GPU (default: 1 "
        "if the cluster has GPUs, else 0).",
        show_default=False,
    ),
]


def ray_settings(
    engine: EngineChoice,
    address: str | None,
    workers: int | None,
    gpus_per_worker: float | None,
) -> RaySettings | None:
    """The Ray options as one value (None: the local engine); usage error if given without ray."""
    if engine is EngineChoice.RAY:
        return RaySettings(address, workers, gpus_per_worker)
    given = [
        flag
        for flag, value in (
            ("--ray-address", address),
            ("--workers", workers),
            ("--gpus-per-worker", gpus_per_worker),
        )
        if value is not None
    ]
    if given:
        raise typer.BadParameter(f"{given[0]} needs --engine ray", param_hint=given[0])
    return None


_FORMAT_SPELLINGS = {"jpeg": "jpg", "tif": "tiff"}


def parse_format(value: str) -> OutputFormat:
    """--format value (jpeg and tif accepted too) -> `OutputFormat`."""
    text = value.strip().lower()
    try:
        return OutputFormat(_FORMAT_SPELLINGS.get(text, text))
    except ValueError:
        raise typer.BadParameter(
            f"expected png, jpg, webp, tiff or same, got {value!r}", param_hint="--format"
        ) from None


def progress_enabled(
    quiet: bool, stream: TextIO | None = None, env: Mapping[str, str] | None = None
) -> bool:
    """Bars only for a person at a terminal: not with --quiet, NO_COLOR, TERM=dumb or a pipe."""
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    if quiet or env.get("NO_COLOR") or env.get("TERM", "") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class _Reporter:
    """Everything a batch says on stderr: bars (files, tiles of big images), lines, summary."""

    def __init__(self, total: int, *, quiet: bool, bar: bool) -> None:
        self.quiet = quiet
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self._bar: Progress | None = None
        if bar:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description:<28.28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                redirect_stdout=False,  # stdout is data (JSON lines, image bytes), never the bar's
            )
            self._files = self._bar.add_task("images", total=total)
            self._tiles = self._bar.add_task("  tiles", total=1, visible=False)

    def __enter__(self) -> _Reporter:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def line(self, text: str) -> None:
        text = _plain(text)
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.line(text)

    def started(self, job: Job, width: int, height: int) -> None:
        if self._bar is not None:
            self._bar.update(self._files, description=job.label)
            self._bar.update(self._tiles, visible=False, completed=0)

    def tiles(self, done: int, total: int) -> None:
        if self._bar is not None and total > 1:
            self._bar.update(self._tiles, total=total, completed=done, visible=True)

    def finished(self, result: Result) -> None:
        status = result.status.value
        self.counts[status] += 1
        if self._bar is not None:
            self._bar.advance(self._files)
        source = "<stdin>" if result.input == "-" else result.input
        if status == "failed":
            self.line(f"mprnet: {source}: {result.error or 'failed'}")
            return
        for warning in result.warnings:
            self.note(f"mprnet: warning: {warning}")
        if status == "ok":  # with or without bars: where each output went
            target = "<stdout>" if result.output == "-" else result.output
            if result.device is None:  # found on disk as a run stopped: no timings known
                self.note(f"{source} -> {target}")
                return
            self.note(
                f"{source} -> {target} "
                f"({result.seconds or 0:.1f} s on {result.device}, {result.backend} "
                f"{result.precision}, {result.tiles} tile(s))"
            )
        else:
            self.note(f"{source}: skipped, {result.output} exists")

    def summary(self, *, interrupted: bool = False) -> None:
        c = self.counts
        skipped = f"{c['skipped']} skipped" + (
            " (exist; --overwrite to replace)" if c["skipped"] else ""
        )
        text = f"{c['ok']} restored, {skipped}, {c['failed']} failed"
        if interrupted:
            text += "; interrupted: run the same command again to resume"
        self.note(text)


def _print_json(line: str) -> None:
    """One JSON line on stdout; a reader that went away (`| head`) stops the run cleanly."""
    from mprnet_cli._stdio import write_stdout
    from mprnet_cli.errors import OutputError, describe_os_error

    try:
        write_stdout(line + "\n")
    except BrokenPipeError:
        raise OutputError("stdout was closed before all JSON lines were written") from None
    except OSError as exc:  # e.g. `--json > /dev/full`
        raise OutputError(f"stdout: {describe_os_error(exc)}") from None


def _restore(
    task: Task,
    inputs: list[str],
    output: str | None,
    recursive: bool,
    suffix: str | None,
    fmt: str,
    jpeg_quality: int,
    json_lines: bool,
    max_pixels: int,
    overwrite: bool,
    quiet: bool,
    restorer_options: dict[str, Any],
    threads: int | None,
    explicit_overlap: int | None = None,
    cluster: RaySettings | None = None,
) -> None:
    out_format = parse_format(fmt)
    with errors_to_exit():
        import json
        from contextlib import closing

        from mprnet_cli.batch import run_batch
        from mprnet_cli.errors import UsageError
        from mprnet_cli.jobs import Callbacks, Destination, expand_inputs, plan_outputs

        device_spec(restorer_options["device"])
        from mprnet_cli.locations import engine_paths, location

        # file:// URIs are paths; object-store URIs are for the Ray engine only
        inputs, output = engine_paths(inputs, output, ray=cluster is not None)
        if json_lines and output == "-":
            raise UsageError("--json and -o - both want stdout; write the image to a file")
        tile, overlap = restorer_options["tile"], explicit_overlap
        if tile and overlap is not None and overlap >= tile:
            raise UsageError(
                f"--tile-overlap {overlap} must be smaller than --tile {tile} "
                f"(e.g. --tile-overlap {min(32, tile // 4)})"
            )
        name_suffix = f"_{task.past_tense}" if suffix is None else suffix
        exclude = location(output) if output not in (None, "-") else None
        expansion = expand_inputs(inputs, recursive=recursive, suffix=name_suffix, exclude=exclude)
        for warning in expansion.warnings:
            say(f"mprnet: warning: {warning}", quiet=quiet)
        plan = plan_outputs(expansion, output, suffix=name_suffix, fmt=out_format)
        if plan.destination is Destination.STDOUT and sys.stdout.isatty():
            raise UsageError(
                "-o - would print image data to the terminal; redirect stdout (> out.png)"
            )
        reporter = _Reporter(len(expansion.jobs), quiet=quiet, bar=progress_enabled(quiet))

        def load() -> Restorer:
            from mprnet_cli.api import Restorer
            from mprnet_cli.device import set_threads

            set_threads(threads)
            return Restorer(task, notify=reporter.note, quiet=quiet, **restorer_options)

        def finished(result: Result) -> None:
            # Here, not in the loop below: results settled while the run is being stopped
            # (Ctrl-C, SIGTERM) reach this callback only, and each must get its JSON line.
            reporter.finished(result)
            if json_lines:
                _print_json(json.dumps(result.to_json()))

        callbacks = Callbacks(started=reporter.started, tiles=reporter.tiles, finished=finished)
        # closing(): whatever stops this loop (a closed stdout, Ctrl-C between results) shuts
        # the runner down here and now (queued work dropped, the write in progress finished),
        # before the error is reported, not whenever the generator happens to be collected.
        if cluster is not None:
            results = _ray_results(
                task,
                expansion.jobs,
                plan,
                cluster,
                restorer_options,
                threads,
                reporter,
                overwrite=overwrite,
                jpeg_quality=jpeg_quality,
                max_pixels=max_pixels or None,
                callbacks=callbacks,
                quiet=quiet,
            )
        else:
            results = run_batch(
                expansion.jobs,
                load,
                plan,
                overwrite=overwrite,
                jpeg_quality=jpeg_quality,
                max_pixels=max_pixels or None,
                callbacks=callbacks,
                stdin=sys.stdin.buffer,
                stdout=sys.stdout.buffer,
                raise_unexpected=_debug(),
            )
        try:
            with reporter, closing(results):
                for _ in results:
                    pass
        except KeyboardInterrupt:
            reporter.summary(interrupted=True)
            raise
        reporter.summary()
        if reporter.counts["failed"]:
            raise typer.Exit(1)


def _ray_results(
    task: Task,
    jobs: list[Job],
    plan: Any,
    cluster: RaySettings,
    restorer_options: dict[str, Any],
    threads: int | None,
    reporter: _Reporter,
    **kw: Any,
) -> Generator[Result, None, None]:
    """The Ray engine's results (`mprnet_cli.runners.ray`); weights resolved here, once."""
    from mprnet_cli.runners import load_ray
    from mprnet_cli.weights import resolve

    ray_runner = load_ray()
    quiet = kw.pop("quiet")
    opts = restorer_options
    if opts["compile"]:
        from mprnet_cli.errors import UsageError

        raise UsageError("--compile is not supported with --engine ray yet; drop it")
    network = ray_runner.NetworkSettings(
        task,
        device=opts["device"],
        precision=opts["precision"],
        tile=opts["tile"],
        tile_overlap=opts["tile_overlap"],
        tile_batch=opts["tile_batch"],
        threads=threads,
        backend=opts["backend"],
        strength=opts["strength"],
        ensemble=opts["ensemble"],
        hide_split_lines=opts["hide_split_lines"],
    )
    results: Generator[Result, None, None] = ray_runner.restore_files(
        jobs,
        plan,
        weights=lambda: resolve(
            task, weights=opts["weights"], model=opts["model"], notify=reporter.note, quiet=quiet
        ),
        network=network,
        settings=cluster,
        **kw,
    )
    return results


def _register(task: Task) -> None:
    def command(
        inputs: Annotated[
            list[str],
            typer.Argument(
                metavar="INPUT",
                help="Image files, folders, quoted globs ('photos/**/*.jpg'), or - for stdin.",
                show_default=False,
            ),
        ],
        output: OutputOpt = None,
        recursive: RecursiveOpt = False,
        suffix: SuffixOpt = None,
        fmt: FormatOpt = "same",
        jpeg_quality: JpegQualityOpt = 95,
        json_lines: JsonOpt = False,
        max_pixels: MaxPixelsOpt = 16384 * 16384,
        overwrite: OverwriteOpt = False,
        quiet: QuietOpt = False,
        weights: WeightsOpt = None,
        model: ModelOpt = ModelChoice.AUTO,
        device: DeviceOpt = "auto",
        precision: PrecisionOpt = Precision.AUTO,
        backend: BackendOpt = BackendChoice.AUTO,
        tile: TileOpt = "auto",
        tile_overlap: OverlapOpt = None,
        tile_batch: TileBatchOpt = 1,
        strength: StrengthOpt = 1.0,
        ensemble: EnsembleOpt = Ensemble.OFF,
        hide_split_lines: HideSplitLinesOpt = False,
        threads: ThreadsOpt = None,
        compile_model: CompileOpt = False,
        engine: EngineOpt = EngineChoice.LOCAL,
        ray_address: RayAddressOpt = None,
        workers: WorkersOpt = None,
        gpus_per_worker: GpusPerWorkerOpt = None,
    ) -> None:
        cluster = ray_settings(engine, ray_address, workers, gpus_per_worker)
        options = {
            "weights": weights,
            "model": model,
            "device": device,
            "precision": precision,
            "backend": backend,
            "tile": parse_tile(tile),
            "tile_overlap": 32 if tile_overlap is None else tile_overlap,
            "tile_batch": tile_batch,
            "compile": compile_model,
            "strength": strength,
            "ensemble": ensemble,
            "hide_split_lines": hide_split_lines,
        }
        _restore(
            task,
            inputs,
            output,
            recursive,
            suffix,
            fmt,
            jpeg_quality,
            json_lines,
            max_pixels,
            overwrite,
            quiet,
            options,
            threads,
            tile_overlap,
            cluster,
        )

    command.__doc__ = (
        f"{task.summary}\n\n"
        f"Writes <stem>_{task.past_tense}<ext> next to each input, as the same kind of file "
        "(format, bit depth, alpha, gray, ICC profile, EXIF; upright). Existing outputs are "
        "skipped, so rerunning an interrupted batch resumes it.\n\n"
        "Exit codes: 0 all done (restored or skipped), 1 some inputs failed, "
        "2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
    )
    app.command(task.value)(command)


for _task in Task:
    _register(_task)


# --------------------------------------------------------------------------- weights commands


def _tasks(names: list[Task] | list[str] | None) -> list[Task]:
    if not names:
        return list(Task)
    out = []
    for name in names:
        try:
            out.append(Task(name))
        except ValueError:
            raise typer.BadParameter(
                f"unknown task {name!r}: choose from {', '.join(t.value for t in Task)}",
                param_hint="TASK",
            ) from None
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return "?"


@weights_app.command("list")
def weights_list(
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per row (task, source, n, name, local, size, path, licence).",
        ),
    ] = False,
) -> None:
    """Show each task's weights and which are here: published sources (# = order tried), imported, bundled."""
    with errors_to_exit():
        from mprnet_cli.weights import status

        if json_lines:
            import json

            for row in status():
                record = {
                    "task": row.task.value,
                    "source": row.source.value,
                    "n": row.number,
                    "name": row.name,
                    "local": row.cached,
                    "size": row.size,
                    "path": str(row.path) if row.path else None,
                    "licence": row.license,
                }
                _print_json(json.dumps(record))
            return

        from rich.console import Console
        from rich.table import Table

        table = Table("task", "source", "#", "local", "size", "licence", "file / path")
        table.columns[-1].overflow = "fold"
        for row in status():
            table.add_row(
                row.task.value,
                row.source.value,
                str(row.number) if row.number is not None else "",
                "yes" if row.cached else "no",
                _size(row.size),
                row.license,
                str(row.path) if row.path else row.name,
            )
        # A terminal wraps to its width; a pipe or file gets whole lines (no fixed 80
        # columns cutting paths mid-word), as wide as the longest row.
        Console(width=None if sys.stdout.isatty() else 100_000).print(table)


@weights_app.command("download")
def weights_download(
    tasks: TasksArg = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    source: Annotated[
        int | None,
        typer.Option(
            "--source",
            min=1,
            help="Only this published source (its # in `weights list`), not each in order.",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Fetch the published weights into the Hugging Face cache (once; later runs need no network)."""
    chosen = _tasks(tasks)
    with errors_to_exit():
        from mprnet_cli.weights import download_published, registry

        entries = registry()
        for task in chosen:
            got = download_published(
                entries[task].published,
                notify=lambda m: say(m, quiet=quiet),
                force=force,
                quiet=quiet,
                source=source,
            )
            say(f"{task.value}: {got.path}", quiet=quiet)


@weights_app.command("import")
def weights_import(
    task: TaskArg,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="A published checkpoint fetched by hand.", show_default=False
        ),
    ],
    quiet: QuietOpt = False,
) -> None:
    """Keep a checkpoint fetched by hand in the cache, after the checks a download gets.

    Later runs then use it like a download (README: Weights, for the authors' Drive links).
    """
    (chosen,) = _tasks([task])
    with errors_to_exit():
        from mprnet_cli.weights import import_file

        say(f"{chosen.value}: {import_file(chosen, file)}", quiet=quiet)


@weights_app.command("path")
def weights_path(
    task: TaskArg,
    model: ModelOpt = ModelChoice.AUTO,
) -> None:
    """Print the local path of a task's weights (nothing is downloaded)."""
    (chosen,) = _tasks([task])
    with errors_to_exit():
        from mprnet_cli.weights import resolve

        print(resolve(chosen, model=model, download=False).path)


# --------------------------------------------------------------------------- train and eval


def _parse_width(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or parts[0] < 4:
        raise typer.BadParameter(
            "expected N_FEAT,SCALE_UNET,SCALE_ORSNET, e.g. 32,16,12", param_hint="--width"
        )
    return parts[0], parts[1], parts[2]


def _one_task(name: Task | str) -> Task:
    (task,) = _tasks([name])
    return task


@app.command("train", short_help="Train an MPRNet of any width (resumable); writes .safetensors.")
def train_command(
    task_name: TaskArg,
    clean: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(
            metavar="CLEAN_DIR",
            help="Folder of clean photos (degraded on the fly).",
            show_default=False,
        ),
    ] = None,
    input_dir: Annotated[
        Path | None, typer.Option("--input", help="Paired degraded images.", show_default=False)
    ] = None,
    target_dir: Annotated[
        Path | None,
        typer.Option("--target", help="Paired clean images (same names).", show_default=False),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Run folder (checkpoints; resumed if present).")
    ] = Path("runs/train"),
    width: Annotated[
        str, typer.Option("--width", metavar="N,S,O", help="N_FEAT,SCALE_UNET,SCALE_ORSNET.")
    ] = "32,16,12",
    num_cab: Annotated[
        int, typer.Option("--num-cab", metavar="N", min=1, help="CABs per stage-3 block.")
    ] = 4,
    steps: Annotated[
        int,
        typer.Option(
            "--steps",
            metavar="N",
            min=0,
            help="Optimiser steps in total (0: fit to --max-minutes).",
        ),
    ] = 20_000,
    batch: Annotated[int, typer.Option("--batch", metavar="N", min=1, help="Crops per step.")] = 8,
    crop: Annotated[
        int, typer.Option("--crop", metavar="N", min=16, help="Crop size (multiple of 8).")
    ] = 128,
    lr: Annotated[
        float, typer.Option("--lr", metavar="RATE", help="Peak learning rate (cosine decay).")
    ] = 2e-4,
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Seed for weights, crops and degradations.")
    ] = 0,
    device: DeviceOpt = "auto",
    max_minutes: Annotated[
        float | None,
        typer.Option(
            "--max-minutes",
            metavar="MINUTES",
            help="Stop (and save) after this long.",
            show_default=False,
        ),
    ] = None,
    save_every: Annotated[
        int,
        typer.Option(
            "--save-every", metavar="N", min=1, help="Checkpoint and validate every N steps."
        ),
    ] = 500,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write .safetensors here (default: OUT/TASK.safetensors).",
            show_default=False,
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from these weights (fine-tuning).", show_default=False),
    ] = None,
    warmup: Annotated[
        int, typer.Option("--warmup", metavar="N", min=0, help="Learning-rate warm-up steps.")
    ] = 200,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore an existing checkpoint in OUT.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --export file.")
    ] = False,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Train an MPRNet of any width; resumes from OUT/last.pt. Writes .safetensors with the recipe."""
    task = _one_task(task_name)
    n, s, o = _parse_width(width)
    with errors_to_exit():
        from mprnet_cli.device import resolve_device, set_threads
        from mprnet_cli.errors import OutputExistsError
        from mprnet_cli.model.config import MPRNetConfig
        from mprnet_cli.train.trainer import Trainer, TrainSettings

        settings = TrainSettings(
            task=task,
            config=MPRNetConfig(n_feat=n, scale_unetfeats=s, scale_orsnetfeats=o, num_cab=num_cab),
            run_dir=out,
            clean_dir=clean,
            input_dir=input_dir,
            target_dir=target_dir,
            steps=steps,
            batch=batch,
            crop=crop,
            lr=lr,
            seed=seed,
            device=device,
            save_every=save_every,
            max_seconds=max_minutes * 60 if max_minutes else None,
            init=init,
            warmup=warmup,
        )
        set_threads(threads)
        dev = resolve_device(device)
        export_path = export or out / f"{task.value}.safetensors"
        if export is not None and export.exists() and not overwrite:
            raise OutputExistsError(f"{export} exists; pass --overwrite to replace it")
        trainer = Trainer(settings, dev)  # validates the data before anything is discarded
        if not restart and trainer.resume():
            say(f"resumed {out / 'last.pt'} at step {trainer.state.step}", quiet=quiet)
        say(f"training {task.value} {settings.config} on {dev}", quiet=quiet)
        with _train_progress(quiet) as progress:
            state = trainer.run(progress)
        path = trainer.export(export_path)
        last = state.history[-1] if state.history else {}
        say(
            f"step {state.step}/{state.total_steps} in {state.seconds / 60:.1f} min; "
            f"validation PSNR {last.get('val_psnr', float('nan')):.2f} dB; weights: {path}",
            quiet=quiet,
        )


@contextmanager
def _train_progress(quiet: bool) -> Iterator[Callable[[int, int, float, float], None] | None]:
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} crops/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        handle = bar.add_task("train", total=None, loss=float("nan"), rate=0.0)

        def update(step: int, total: int, loss: float, rate: float) -> None:
            bar.update(handle, completed=step, total=total, loss=loss, rate=rate)

        yield update


@app.command("eval", short_help="PSNR/SSIM of restored vs clean images (the paper's protocol).")
def eval_command(
    task_name: TaskArg,
    input_dir: Annotated[
        Path, typer.Option("--input", help="Degraded images (or clean ones with --degrade).")
    ],
    target_dir: Annotated[
        Path | None,
        typer.Option("--target", help="Clean images, same names.", show_default=False),
    ] = None,
    degrade: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--degrade",
            metavar="SPEC",
            help="Degrade --input on the fly: noise:25, blur:levin:K, rain (fixed seed).",
            show_default=False,
        ),
    ] = None,
    weights: WeightsOpt = None,
    model: ModelOpt = ModelChoice.AUTO,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.AUTO,
    backend: BackendOpt = BackendChoice.AUTO,
    tile: TileOpt = "auto",
    strength: StrengthOpt = 1.0,
    ensemble: EnsembleOpt = Ensemble.OFF,
    hide_split_lines: HideSplitLinesOpt = False,
    seed: Annotated[
        int,
        typer.Option("--seed", metavar="N", help="Base seed of --degrade (image i uses seed + i)."),
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", min=1, help="Only the first N pairs.", show_default=False
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON line per image, then a summary line.")
    ] = False,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """PSNR/SSIM over degraded/clean pairs (the paper's protocol), and the same for the untouched input."""
    task = _one_task(task_name)
    tile_size = parse_tile(tile)
    with errors_to_exit():
        import json as jsonlib

        from mprnet_cli.api import Restorer
        from mprnet_cli.device import set_threads
        from mprnet_cli.evaluate import evaluate, iter_pairs
        from mprnet_cli.train.degrade import parse_degradation

        set_threads(threads)
        degradation = parse_degradation(degrade) if degrade else None
        pairs = iter_pairs(input_dir, target_dir, degradation, seed=seed, limit=limit)
        restorer = Restorer(
            task,
            weights=weights,
            model=model,
            device=device,
            precision=precision,
            backend=backend,
            tile=tile_size,
            strength=strength,
            ensemble=ensemble,
            hide_split_lines=hide_split_lines,
            notify=lambda m: say(m, quiet=quiet),
            quiet=quiet,
        )
        # The paper's protocol restores whole images: tile only where memory demands it,
        # so scores do not depend on the device's speed-minded tile choice.
        restorer.backend.ignore_speed_limits()

        def show(r: Any) -> None:
            if json_out:
                _print_json(jsonlib.dumps(asdict(r)))
            else:
                say(
                    f"{r.name}: {r.psnr:.2f} dB / {r.ssim:.4f} (input {r.input_psnr:.2f} / {r.input_ssim:.4f})",
                    quiet=quiet,
                )

        report = evaluate(task, lambda rgb: restorer.restore_rgb(rgb)[0], pairs, on_result=show)
        summary = report.summary()
        summary["weights"] = str(restorer.weights_path)
        summary["source"] = restorer.source.value
        if json_out:
            _print_json(jsonlib.dumps(summary))
        print(
            f"{task.value} on {input_dir} ({report.images} images, {report.protocol}): "
            f"{report.psnr:.2f} dB / {report.ssim:.4f}  (input {report.input_psnr:.2f} dB / "
            f"{report.input_ssim:.4f}, gain {report.gain:+.2f} dB)",
            file=sys.stderr if json_out else sys.stdout,
        )


@app.command("bench", short_help="Speed per task (MP/s, GFLOP/s, memory) vs the reference mode.")
def bench_command(
    tasks: TasksArg = None,
    size: Annotated[str, typer.Option("--size", metavar="WxH", help="Image size WxH.")] = "512x512",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.AUTO,
    backend: BackendOpt = BackendChoice.AUTO,
    modes: Annotated[
        str | None,
        typer.Option(
            "--modes",
            metavar="MODES",
            help="Comma-separated execution modes to compare: reference, default (what a restore "
            "command runs here with no flags), fp32, bf16, fp16, bf16+compile, fp32+compile, "
            "openvino-fp32, openvino-bf16 (default: default; --backend and --precision set what "
            "default runs).",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", metavar="N", min=1, help="Images per forward pass.")
    ] = 1,
    repeat: Annotated[
        int, typer.Option("--repeat", metavar="N", min=1, help="Timed runs (median is reported).")
    ] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON line per result.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Time each network (random weights) and compare with the reference execution, in one run."""
    chosen = _tasks(tasks)
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter("expected WxH, e.g. 512x512", param_hint="--size") from None
    if w < 8 or h < 8 or w % 8 or h % 8:
        raise typer.BadParameter("width and height must be multiples of 8", param_hint="--size")
    with errors_to_exit():
        import json as jsonlib

        from mprnet_cli import bench
        from mprnet_cli.device import describe, resolve_device, set_threads
        from mprnet_cli.errors import UsageError

        set_threads(threads)
        dev = resolve_device(device)
        if modes:
            names = [m.strip() for m in modes.split(",") if m.strip()]
            unknown = [m for m in names if m not in bench.MODES]
            if unknown:
                raise UsageError(
                    f"unknown mode {unknown[0]!r}: choose from {', '.join(bench.MODES)}"
                )
        else:
            names = ["default"]
        say(f"benchmarking on {describe(dev)}, {w}x{h}, {torch_threads()} threads", quiet=json_out)

        def show(r: bench.BenchResult) -> None:
            if json_out:
                _print_json(jsonlib.dumps(r.to_json()))
                return
            speed = f"{r.speedup_vs_reference:.2f}x" if r.speedup_vs_reference else "-"
            print(
                f"{r.task:8s} {r.mode:13s} {r.backend:8s} {r.precision:4s} "
                f"{r.megapixels_per_second:8.3f} MP/s  "
                f"{r.seconds_per_12mp:8.1f} s/12MP  {r.gflops:8.1f} GFLOP/s  "
                f"peak {r.peak_memory_bytes / 2**20:7.0f} MiB  {speed} vs reference",
                flush=True,
            )

        bench.run(
            [t.value for t in chosen],
            names,
            dev,
            height=h,
            width=w,
            batch=batch,
            repeat=repeat,
            on_result=show,
            default=bench.default_mode(backend, precision),
        )


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    """Console-script entry point: SIGTERM handled like Ctrl-C, usage errors as one line."""
    import signal

    from mprnet_cli.errors import Terminated, raise_terminated

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        # standalone_mode=False: Typer's own parsing errors come back to us as exceptions,
        # so they get the same one-line form as mprnet's (instead of a usage block).
        code = app(standalone_mode=False)
    except typer.Abort:  # end of input at a prompt
        print("mprnet: error: aborted", file=sys.stderr, flush=True)
        code = 1
    except typer.TyperException as exc:  # option/argument validation
        code = int(getattr(exc, "exit_code", 2))
        ctx = getattr(exc, "ctx", None)
        show = getattr(exc, "show", None)
        if ctx is not None and callable(show) and str(exc) == ctx.get_help():
            show()  # a group run without a command: its help, as Typer prints it
        else:
            print(f"mprnet: error: {_usage_line(exc)}", file=sys.stderr, flush=True)
    if code == INTERRUPTED_EXIT and Terminated.received:
        # Outside `errors_to_exit` (parsing, imports) Typer turns any KeyboardInterrupt,
        # ours included, into a silent exit 130: keep SIGTERM's own code there too.
        code = Terminated.exit_code
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc: Exception) -> str:
    """Typer's 'Usage/Try/Error' block as one line, with the help hint at its end."""
    format_message = getattr(exc, "format_message", None)
    text = format_message() if callable(format_message) else str(exc)
    text = text[:1].lower() + text[1:].rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "mprnet"
    return f"{_plain(text)}; see `{command} --help`"
