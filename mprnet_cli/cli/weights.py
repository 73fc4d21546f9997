"""mprnet weights list/download/import/path: what is here, fetching and importing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mprnet_cli.choices import ModelChoice
from mprnet_cli.cli.options import ModelOpt, QuietOpt, TaskArg, TasksArg, parse_tasks
from mprnet_cli.cli.output import errors_to_exit, print_json, say
from mprnet_cli.cli.values import whole
from mprnet_cli.tasks import task_names

app = typer.Typer(
    help="List, download, import and locate network weights.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return "?"


@app.command("list")
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
                print_json(json.dumps(record))
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


@app.command("download")
def weights_download(
    tasks: TasksArg = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    source: Annotated[
        int | None,
        typer.Option(
            "--source",
            metavar="N",
            parser=whole(1),
            help="Only this published source (its # in `weights list`), not each in order.",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Fetch the published weights into the Hugging Face cache (once; later runs need no network).

    TASK: {tasks}; several, or none for all of them.
    """
    chosen = parse_tasks(tasks)
    with errors_to_exit():
        from mprnet_cli.errors import OfflineError, UsageError, WeightsError
        from mprnet_cli.weights import download_published, registry

        entries = registry()
        failed: list[str] = []
        offline = False
        for task in chosen:
            try:
                if offline:  # the Hub is no nearer for the next task: say so, do not wait again
                    raise OfflineError(task.value)
                got = download_published(
                    entries[task].published,
                    notify=lambda m: say(m, quiet=quiet),
                    force=force,
                    quiet=quiet,
                    source=source,
                )
            except UsageError:
                raise
            except OfflineError:
                offline = True
                failed.append(task.value)
                say(f"mprnet: {task.value}: {_offline_advice(task.value)}")
                continue
            except WeightsError as exc:
                failed.append(task.value)
                say(f"mprnet: {task.value}: {exc}")
                continue
            say(f"{task.value}: {got.path}", quiet=quiet)
        if len(chosen) > 1 and failed:  # each task's own line above; one verdict for the run
            say(
                f"mprnet: error: {len(failed)} of {len(chosen)} downloads failed ({', '.join(failed)})"
            )
        if failed:
            raise typer.Exit(1)


weights_download.__doc__ = (weights_download.__doc__ or "").format(tasks=task_names())


def _offline_advice(task: str) -> str:
    """What to do when the Hub cannot be reached: this very command is no answer."""
    return (
        "the Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE is set). "
        "Try again when connected, or fetch the file by hand (docs/weights.md, the authors' "
        f"Google Drive links) and run `mprnet weights import {task} FILE`"
    )


@app.command("import")
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

    Later runs then use it like a download (docs/weights.md, for the authors' Drive links).
    """
    (chosen,) = parse_tasks([task])
    with errors_to_exit():
        from mprnet_cli.weights import import_file

        say(f"{chosen.value}: {import_file(chosen, file)}", quiet=quiet)


@app.command("path")
def weights_path(
    task: TaskArg,
    model: ModelOpt = ModelChoice.AUTO,
) -> None:
    """Print the local path of a task's weights (nothing is downloaded)."""
    (chosen,) = parse_tasks([task])
    with errors_to_exit():
        from mprnet_cli.weights import resolve

        print(resolve(chosen, model=model, download=False).path)
