"""derain, deblur and denoise: one command per task over the runner seam.

The options are parsed into frozen values: `BatchOptions` (inputs, outputs, reporting),
`RestoreSettings` (how to restore: `cli.options.settings_options` adds its options) and
`RaySettings` (the cluster); the chosen engine (`runners.base.get_runner`) gets them as
one `RunRequest`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mprnet_cli._stdio import binary
from mprnet_cli.choices import EngineChoice
from mprnet_cli.cli.options import OutputOpt, OverwriteOpt, QuietOpt, settings_options
from mprnet_cli.cli.output import (
    Reporter,
    debug_enabled,
    errors_to_exit,
    print_json,
    progress_enabled,
    say,
)
from mprnet_cli.cli.values import choice, number, whole
from mprnet_cli.runners import RaySettings
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from mprnet_cli.jobs import Job, OutputPlan, RestorerLike, Result
    from mprnet_cli.locations import Where
    from mprnet_cli.runners.base import RunRequest

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
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="One JSON object per input on stdout; messages stay on stderr."),
]
WatchOpt = Annotated[
    bool,
    typer.Option(
        "--watch",
        help="Keep watching the INPUT folders: restore what is there, then each new or "
        "replaced image once completely written, until Ctrl-C.",
    ),
]

EngineOpt = Annotated[
    EngineChoice,
    typer.Option(
        "--engine",
        parser=choice(EngineChoice),
        help="local: this machine; ray: a Ray cluster (pip install 'mprnet-cli[ray]').",
    ),
]
RayAddressOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join with --engine ray (auto: the one `ray start` made here; "
        "default: RAY_ADDRESS, else a new private local one).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--workers",
        metavar="N",
        parser=whole(1),
        help="Network actors with --engine ray (default: one per GPU; CPU-only: CPUs / 4).",
        show_default=False,
    ),
]
GpusPerWorkerOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--gpus-per-worker",
        metavar="F",
        parser=number(0.0),
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
) -> RaySettings:
    """The Ray options as one value; a usage error if given without --engine ray."""
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
    return RaySettings()


@dataclass(frozen=True)
class BatchOptions:
    """Everything a restore command takes besides the settings: inputs, outputs, reporting."""

    output: str | None
    recursive: bool
    suffix: str | None
    json_lines: bool
    overwrite: bool
    quiet: bool
    watch: bool = False  # the INPUT folders: restore what lands there until Ctrl-C


def _restore(
    task: Task,
    inputs: list[str],
    batch: BatchOptions,
    settings: RestoreSettings,
    engine: EngineChoice = EngineChoice.LOCAL,
    cluster: RaySettings = RaySettings(),  # noqa: B008 - frozen
) -> None:
    quiet, output = batch.quiet, batch.output
    with errors_to_exit():
        import json
        from contextlib import closing

        from mprnet_cli.errors import UsageError
        from mprnet_cli.jobs import Callbacks, Destination, expand_inputs, plan_outputs
        from mprnet_cli.locations import engine_paths, location
        from mprnet_cli.runners.base import RunRequest, get_runner

        ray = engine is EngineChoice.RAY
        if ray and settings.compile:
            raise UsageError("--compile is not supported with --engine ray yet; drop it")
        # file:// URIs are paths; object-store URIs are for the Ray engine only
        inputs, output = engine_paths(inputs, output, ray=ray)
        if batch.json_lines and output == "-":
            raise UsageError("--json and -o - both want stdout; write the image to a file")
        _check_std_streams(inputs, output, json_lines=batch.json_lines)
        name_suffix = f"_{task.past_tense}" if batch.suffix is None else batch.suffix
        exclude = location(output) if output not in (None, "-") else None
        expansion = expand_inputs(
            inputs,
            recursive=batch.recursive,
            suffix=name_suffix,
            exclude=exclude,
            overwrite=batch.overwrite,
        )
        for warning in expansion.warnings:
            say(f"mprnet: warning: {warning}", quiet=quiet)
        for note in expansion.notes:
            say(f"mprnet: {note}", quiet=quiet)
        plan = plan_outputs(expansion, output, suffix=name_suffix, fmt=settings.format)
        _check_output_folder(plan, expansion.jobs)
        if plan.destination is Destination.STDOUT and sys.stdout.isatty():
            raise UsageError(
                "-o - would print image data to the terminal; redirect stdout (> out.png)"
            )
        if batch.watch:
            _check_watch(inputs, output, ray=ray)
        bar = progress_enabled(quiet) and not batch.watch
        reporter = Reporter(len(expansion.jobs), quiet=quiet, bar=bar, count=batch.watch)

        def finished(result: Result) -> None:
            # Called as each output is written (also for results settled while the run is
            # being stopped, which are then never yielded): each gets its line at once.
            reporter.finished(result)
            if batch.json_lines:
                print_json(json.dumps(result.to_json()))

        request = RunRequest(
            task,
            expansion.jobs,
            plan,
            settings,
            overwrite=batch.overwrite,
            callbacks=Callbacks(
                started=reporter.started,
                tiles=reporter.tiles,
                frames=reporter.frames,
                finished=finished,
            ),
            notify=reporter.note,
            quiet=quiet,
            cluster=cluster,
            stdin=binary(sys.stdin),
            stdout=binary(sys.stdout),
            raise_unexpected=debug_enabled(),
        )
        if batch.watch:
            _watch(inputs, batch, exclude, name_suffix, request, reporter)
            return
        results = get_runner(engine)(request)
        # closing(): whatever stops this loop (a closed stdout, Ctrl-C between results) shuts
        # the runner down here and now (queued work dropped, the write in progress finished),
        # before the error is reported, not whenever the generator happens to be collected.
        try:
            with reporter, closing(results):
                for _ in results:
                    pass
        except KeyboardInterrupt as exc:
            if debug_enabled():
                raise
            # The summary says it all: no "mprnet: error: interrupted" line after it.
            why, code = _stopped_by(exc)
            reporter.summary(interrupted=True, why=why)
            raise typer.Exit(code) from None
        reporter.summary()
        if reporter.counts["failed"]:
            raise typer.Exit(1)


def _check_watch(inputs: list[str], output: str | None, *, ray: bool) -> None:
    from pathlib import Path

    from mprnet_cli.errors import UsageError

    if ray:
        raise UsageError("--watch runs on this machine; drop --engine ray")
    if output == "-":
        raise UsageError("--watch writes files; give -o DIR instead of -o -")
    for arg in inputs:
        if not Path(arg).is_dir():
            raise UsageError(f"--watch takes folders to watch; {arg} is not a folder")


def _watch(
    inputs: list[str],
    batch: BatchOptions,
    exclude: Where | None,
    suffix: str,
    request: RunRequest,
    reporter: Reporter,
) -> None:
    """--watch (`mprnet_cli.watch`): the same planner and local runner, fed as files settle;
    the network is loaded once, at the first image that needs it, and kept."""
    import dataclasses
    from pathlib import Path

    from mprnet_cli.jobs import expand_inputs
    from mprnet_cli.runners import local
    from mprnet_cli.watch import Watcher, watch

    loaded: list[RestorerLike] = []

    def network() -> RestorerLike:
        if not loaded:
            loaded.append(local.load_restorer(request))
        return loaded[0]

    def scan() -> list[Job]:
        return expand_inputs(inputs, recursive=batch.recursive, suffix=suffix, exclude=exclude).jobs

    def restore(jobs: Sequence[Job], overwrite: bool) -> Generator[Result, None, None]:
        return local.run(dataclasses.replace(request, jobs=jobs, overwrite=overwrite), network)

    watcher = Watcher(scan, restore, request.plan, overwrite=batch.overwrite)
    say(f"mprnet: watching {', '.join(inputs)} (Ctrl-C to stop)", quiet=batch.quiet)
    try:
        with reporter:
            watch([Path(a) for a in inputs], watcher, recursive=batch.recursive)
    except KeyboardInterrupt:
        pass  # Ctrl-C (or SIGTERM) is how a watch ends; the write in progress finished
    reporter.summary()


def _check_output_folder(plan: OutputPlan, jobs: list[Job]) -> None:
    """An -o folder nothing can be written in is one error for the run (`OutputError`),
    not one line per input; made here if missing, as each output's folder would be."""
    from pathlib import Path

    from mprnet_cli.imageio import check_writable_folder
    from mprnet_cli.jobs import Destination

    if not isinstance(plan.path, Path) or all(j.error is not None for j in jobs):
        return
    if plan.destination is Destination.DIRECTORY:
        check_writable_folder(plan.path, create=True)
    elif plan.destination is Destination.FILE:
        check_writable_folder(plan.path.parent, create=True)


def _check_std_streams(inputs: list[str], output: str | None, *, json_lines: bool) -> None:
    """A closed stdin or stdout (`<&-`, `>&-`: cron, daemons) matters only to a run that
    uses it; that one gets a usage error before anything is done."""
    from mprnet_cli.errors import UsageError

    if sys.stdin is None and "-" in inputs:
        raise UsageError("- reads stdin, but stdin is closed; give the image as a file")
    if sys.stdout is None and (output == "-" or json_lines):
        what = "--json writes" if json_lines else "-o - writes the image"
        raise UsageError(f"{what} to stdout, but stdout is closed; redirect it (> file)")


def _stopped_by(exc: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped the run, as the summary says it, and the exit code (128 + the signal)."""
    from mprnet_cli.cli.output import INTERRUPTED_EXIT
    from mprnet_cli.errors import Terminated

    if isinstance(exc, Terminated):
        return f"interrupted by {Terminated.signal_name}", Terminated.exit_code
    return "interrupted", INTERRUPTED_EXIT


def register(app: typer.Typer, task: Task) -> None:
    """Add the command named after `task`, with its help."""

    @settings_options()
    def command(
        inputs: Annotated[
            list[str],
            # hidden: Typer would list it as `INPUT <list[str]>`; the help text says it
            typer.Argument(metavar="INPUT", show_default=False, hidden=True),
        ],
        output: OutputOpt = None,
        recursive: RecursiveOpt = False,
        suffix: SuffixOpt = None,
        json_lines: JsonOpt = False,
        overwrite: OverwriteOpt = False,
        quiet: QuietOpt = False,
        *,
        settings: RestoreSettings,
        watch: WatchOpt = False,
        engine: EngineOpt = EngineChoice.LOCAL,
        ray_address: RayAddressOpt = None,
        workers: WorkersOpt = None,
        gpus_per_worker: GpusPerWorkerOpt = None,
    ) -> None:
        cluster = ray_settings(engine, ray_address, workers, gpus_per_worker)
        batch = BatchOptions(output, recursive, suffix, json_lines, overwrite, quiet, watch)
        _restore(task, inputs, batch, settings, engine, cluster)

    command.__doc__ = (
        f"{task.summary}\n\n"
        "INPUT: image or video files, folders, quoted globs ('photos/**/*.jpg'), or - for "
        "stdin.\n\n"
        f"Writes <stem>_{task.past_tense}<ext> next to each input, as the same kind of file "
        "(format, bit depth, alpha, gray, ICC profile, EXIF; upright). Existing outputs are "
        "skipped, so rerunning an interrupted batch resumes it.\n\n"
        "Exit codes: 0 all done (restored or skipped), 1 some inputs failed, "
        "2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up "
        "(SIGHUP)."
    )
    app.command(task.value)(command)
