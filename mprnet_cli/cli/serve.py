"""`mprnet serve`: the networks kept warm behind an HTTP API and a web page.

Parsing only: the network options are the restore commands' own (`RestoreSettings`, the
same `Annotated` aliases); the service lives in `mprnet_cli.serve` (the web stack is the
`serve` extra, imported only when the command runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mprnet_cli.cli.options import QuietOpt, parse_tasks, settings_options
from mprnet_cli.cli.output import errors_to_exit, say
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.api import Restorer
    from mprnet_cli.serve.engine import ServeSettings

_WEB_STACK = frozenset(
    {"fastapi", "starlette", "uvicorn", "multipart", "python_multipart", "anyio"}
)


def parse_task_list(values: list[str] | None) -> list[Task]:
    """--task derain,deblur (commas and/or repeats) -> tasks; all of them when not given."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(parse_tasks(names)))


def parse_weights(values: list[str] | None, tasks: list[Task]) -> tuple[tuple[Task, str], ...]:
    """--weights TASK=FILE, each for a task being served."""
    pairs: dict[Task, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise typer.BadParameter(
                f"expected TASK=FILE (e.g. derain=my.safetensors), got {value!r}",
                param_hint="--weights",
            )
        (task,) = parse_tasks([name.strip()])
        if task not in tasks:
            raise typer.BadParameter(
                f"{task.value} is not served; add it to --task", param_hint="--weights"
            )
        pairs[task] = path
    return tuple(pairs.items())


# The restore commands' network options, declared once (`cli.options.SETTINGS_OPTIONS`);
# --weights is per task here (TASK=FILE), and the output encoding is chosen per request.
_SERVE_SETTINGS = settings_options(
    "model",
    "max_pixels",
    "device",
    "precision",
    "backend",
    "tile",
    "tile_overlap",
    "tile_batch",
    "strength",
    "ensemble",
    "split_lines",
    "hide_split_lines",
    "threads",
    "compile",
)


@_SERVE_SETTINGS
def serve_command(
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on (others than 127.0.0.1 want --token)."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", metavar="PORT", min=0, max=65535, help="TCP port.")
    ] = 8000,
    task: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional at runtime on 3.10
        typer.Option(
            "--task",
            metavar="TASKS",
            help=f"Tasks to serve, comma-separated (default: {','.join(t.value for t in Task)}).",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--weights",
            "-w",
            metavar="TASK=FILE",
            help="Weights file for a task instead of its default (repeat per task).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            help="Uploads decoded or encoded at once (each task's network restores one image "
            "at a time).",
        ),
    ] = 2,
    queue: Annotated[
        int,
        typer.Option(
            "--queue",
            metavar="N",
            min=1,
            help="Requests per task in progress or waiting; more get 429 with Retry-After.",
        ),
    ] = 8,
    max_upload_mb: Annotated[
        float,
        typer.Option("--max-upload-mb", metavar="MB", min=0.001, help="Largest upload accepted."),
    ] = 100.0,
    token: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--token",
            envvar="MPRNET_TOKEN",
            metavar="TOKEN",
            help="Require 'Authorization: Bearer TOKEN' for restoring and /metrics.",
            show_default=False,
        ),
    ] = None,
    drain: Annotated[
        float,
        typer.Option(
            "--drain-seconds",
            metavar="S",
            min=0.0,
            help="On SIGTERM/Ctrl-C, how long requests in progress may still take.",
        ),
    ] = 30.0,
    quiet: QuietOpt = False,
    *,
    settings: RestoreSettings,
) -> None:
    """Serve restoration over HTTP: POST /v1/<task>, a web page at /, API docs at /docs.

    Each task's network is loaded once and kept warm; requests queue for it (up to
    --queue, then 429). /healthz answers at once, /readyz once the networks are loaded,
    /metrics in the Prometheus format. Listens on 127.0.0.1 unless --host says otherwise.
    """
    tasks = parse_task_list(task)
    pairs = parse_weights(weights, tasks)
    network = settings
    with errors_to_exit():
        try:
            from mprnet_cli.serve.app import serve
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in _WEB_STACK:
                raise
            from mprnet_cli.errors import BackendError

            raise BackendError(
                f"mprnet serve needs {exc.name}: pip install 'mprnet-cli[serve]'"
            ) from None
        from mprnet_cli.serve.engine import Lane, ServeSettings

        serving = ServeSettings(
            host=host,
            port=port,
            tasks=tuple(tasks),
            weights=pairs,
            workers=workers,
            max_queue=queue,
            max_pixels=settings.max_pixels,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            token=token or None,
            drain_seconds=drain,
            quiet=quiet,
        )
        for warning in serving.warnings():
            say(f"mprnet: warning: {warning}")
        lanes = {t: Lane(t, _loader(network, serving, t), serving.max_queue) for t in serving.tasks}
        say(
            f"mprnet: serving {', '.join(t.value for t in tasks)} on "
            f"http://{_url_host(host)}:{port}/ (API: /docs); loading the networks",
            quiet=quiet,
        )
        try:
            serve(serving, lanes)
        except KeyboardInterrupt:  # uvicorn drained first, then passed the signal on
            say("mprnet: stopped", quiet=quiet)


def _loader(network: RestoreSettings, serving: ServeSettings, task: Task) -> Callable[[], Restorer]:
    from pathlib import Path

    from mprnet_cli.api import load_restorer

    path = serving.weights_for(task)
    settings = network.replace(weights=Path(path) if path else None)

    def load() -> Restorer:
        return load_restorer(task, settings, quiet=True)

    return load


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
