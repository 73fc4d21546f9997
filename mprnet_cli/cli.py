"""The `mprnet` command line: parsing, messages and exit codes only.

Heavy modules (torch, the model, image I/O) are imported inside commands so
that `mprnet --help` and `mprnet --version` stay instant.

Exit codes: 0 success, 1 failure (some inputs failed, weights problems),
2 usage error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from mprnet_cli import __version__
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.errors import MprnetError

DEBUG_ENV = "MPRNET_DEBUG"

app = typer.Typer(
    name="mprnet",
    help="Remove rain, motion blur and noise from photos with MPRNet (Zamir et al., CVPR 2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(
    help="List, download and locate network weights.", no_args_is_help=True, add_completion=False
)
app.add_typer(weights_app, name="weights")


# --------------------------------------------------------------------------- messages


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def _plain(text: str) -> str:
    return text.replace("\n", " ").strip()


def say(message: str, *, quiet: bool = False) -> None:
    """A human message: always stderr, so stdout stays clean for data."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"mprnet: error: {_plain(message)}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Map typed errors to one stderr line and their exit code (traceback only in debug)."""
    from mprnet_cli.errors import MprnetError

    try:
        yield
    except typer.Exit:
        raise
    except MprnetError as exc:
        if _debug():
            raise
        fail(str(exc), _exit_code(exc))
    except KeyboardInterrupt:
        if _debug():
            raise
        fail("interrupted", 130)
    except Exception as exc:
        if _debug():
            raise
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
    Optional[Path],  # noqa: UP045 - typer needs Optional at runtime on 3.10
    typer.Option(
        "--output",
        "-o",
        help="Output file (default: next to the input, named <stem>_<task>ed.png).",
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
    str,
    typer.Option(
        "--model", "-m", help="Which weights when no file is given: auto, published or bundled."
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", "-d", help="auto, cpu, cuda, cuda:N or mps (auto picks a usable GPU)."
    ),
]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16.")]
TileOpt = Annotated[
    str,
    typer.Option(
        "--tile", "-t", help="Tile size in pixels (multiple of 8), 0 for one pass, or auto."
    ),
]
OverlapOpt = Annotated[int, typer.Option("--tile-overlap", help="Overlap between tiles in pixels.")]
TileBatchOpt = Annotated[int, typer.Option("--tile-batch", help="Tiles per forward pass (GPU).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", "-f", help="Replace existing outputs.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
ThreadsOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--threads", help="CPU threads for the network (default: one per core).", show_default=False
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


def default_output(source: Path, task: Task) -> Path:
    return source.with_name(f"{source.stem}_{task.past_tense}.png")


# --------------------------------------------------------------------------- restore commands


def _restore(
    task: Task,
    input_path: Path,
    output: Path | None,
    weights: Path | None,
    model: str,
    device: str,
    precision: str,
    tile: str,
    tile_overlap: int,
    tile_batch: int,
    overwrite: bool,
    quiet: bool,
    threads: int | None,
) -> None:
    tile_size = parse_tile(tile)
    with errors_to_exit():
        from mprnet_cli.api import Restorer
        from mprnet_cli.device import set_threads
        from mprnet_cli.errors import InputError, OutputExistsError
        from mprnet_cli.imageio import OutputFormat, format_from_suffix, read_image, write_image

        if not input_path.exists():
            raise InputError(f"{input_path}: no such file")
        if input_path.is_dir():
            raise InputError(f"{input_path} is a folder: pass image files")
        out_path = output or default_output(input_path, task)
        if out_path.exists() and not overwrite:
            raise OutputExistsError(f"{out_path} exists; pass --overwrite to replace it")
        fmt = format_from_suffix(out_path) or OutputFormat.PNG
        image = read_image(input_path)
        set_threads(threads)
        restorer = Restorer(
            task,
            weights=weights,
            model=model,
            device=device,
            precision=precision,
            tile=tile_size,
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            notify=lambda m: say(m, quiet=quiet),
            quiet=quiet,
        )
        restored, stats = restorer.restore_rgb(image.rgb, warn=lambda m: say(f"warning: {m}"))
        write_image(out_path, restored, image.info, fmt, alpha=image.alpha, overwrite=overwrite)
        say(f"{input_path} -> {out_path} ({stats.seconds:.1f} s on {stats.device})", quiet=quiet)


def _register(task: Task) -> None:
    def command(
        input_path: Annotated[
            Path, typer.Argument(metavar="INPUT", help="Image to restore.", show_default=False)
        ],
        output: OutputOpt = None,
        weights: WeightsOpt = None,
        model: ModelOpt = "auto",
        device: DeviceOpt = "auto",
        precision: PrecisionOpt = "auto",
        tile: TileOpt = "auto",
        tile_overlap: OverlapOpt = 32,
        tile_batch: TileBatchOpt = 1,
        overwrite: OverwriteOpt = False,
        quiet: QuietOpt = False,
        threads: ThreadsOpt = None,
    ) -> None:
        _restore(
            task,
            input_path,
            output,
            weights,
            model,
            device,
            precision,
            tile,
            tile_overlap,
            tile_batch,
            overwrite,
            quiet,
            threads,
        )

    command.__doc__ = (
        f"{task.summary} Writes INPUT_{task.past_tense}.png next to INPUT unless -o is given."
    )
    app.command(task.value)(command)


for _task in Task:
    _register(_task)


# --------------------------------------------------------------------------- weights commands


def _tasks(names: list[str] | None) -> list[Task]:
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
def weights_list() -> None:
    """Show the weights of every task: source, whether present locally, size and path."""
    with errors_to_exit():
        from rich.console import Console
        from rich.table import Table

        from mprnet_cli.weights import status

        table = Table("task", "source", "file", "local", "size", "path", "license")
        for row in status():
            table.add_row(
                row.task.value,
                row.source.value,
                row.name,
                "yes" if row.cached else "no",
                _size(row.size),
                str(row.path) if row.path else "-",
                row.license,
            )
        Console().print(table)


@weights_app.command("download")
def weights_download(
    tasks: Annotated[
        list[str] | None, typer.Argument(metavar="[TASK]...", help="Tasks (default: all).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch the published weights into the Hugging Face cache (once; later runs need no network)."""
    chosen = _tasks(tasks)
    with errors_to_exit():
        from mprnet_cli.weights import download_published, registry

        entries = registry()
        for task in chosen:
            path = download_published(
                entries[task].published,
                notify=lambda m: say(m, quiet=quiet),
                force=force,
                quiet=quiet,
            )
            say(f"{task.value}: {path}", quiet=quiet)


@weights_app.command("path")
def weights_path(
    task: Annotated[str, typer.Argument(metavar="TASK", help="derain, deblur or denoise.")],
    model: ModelOpt = "auto",
) -> None:
    """Print the local path of a task's weights (nothing is downloaded)."""
    (chosen,) = _tasks([task])
    with errors_to_exit():
        from mprnet_cli.errors import WeightsError
        from mprnet_cli.weights import (
            ModelChoice,
            bundled_path,
            cached_published,
            offline_error,
            registry,
        )

        choice = ModelChoice(model)
        entry = registry()[chosen]
        if choice is not ModelChoice.BUNDLED:
            cached = cached_published(entry.published)
            if cached is not None:
                print(cached)
                return
            if choice is ModelChoice.PUBLISHED or entry.bundled is None:
                raise offline_error(chosen)
        if entry.bundled is None:
            raise WeightsError(f"no bundled weights for {chosen.value}")
        print(bundled_path(entry.bundled))


def main() -> None:
    """Console-script entry point."""
    app()
