"""derain, deblur and denoise: one command per task over the batch runners.

The options are parsed into two frozen values, `BatchOptions` (inputs, outputs, how
the batch runs) and `RestoreSettings` (the network), which the local runner turns
into a `Restorer` and the Ray runner into its actors' `NetworkSettings`.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from mprnet_cli.choices import (
    BackendChoice,
    EngineChoice,
    Ensemble,
    ModelChoice,
    OutputFormat,
    Precision,
    device_spec,
)
from mprnet_cli.cli.options import (
    BackendOpt,
    CompileOpt,
    DeviceOpt,
    EnsembleOpt,
    HideSplitLinesOpt,
    ModelOpt,
    OutputOpt,
    OverlapOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuietOpt,
    RestoreSettings,
    StrengthOpt,
    ThreadsOpt,
    TileBatchOpt,
    TileOpt,
    WeightsOpt,
    parse_tile,
)
from mprnet_cli.cli.output import (
    Reporter,
    debug_enabled,
    errors_to_exit,
    print_json,
    progress_enabled,
    say,
)
from mprnet_cli.runners import RaySettings
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.api import Restorer
    from mprnet_cli.jobs import Job, OutputPlan, Result
    from mprnet_cli.video import VideoOptions

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

VideoQualityOpt = Annotated[
    int,
    typer.Option(
        "--video-quality",
        metavar="CRF",
        min=0,
        max=63,
        help="Video inputs: CRF-like quality of the re-encoded video, lower is better "
        "(x264's scale; 0 lossless for H.264/H.265).",
    ),
]
VideoCodecOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--video-codec",
        metavar="CODEC",
        help="Video inputs: encode with this codec (h264, hevc, vp9, av1; default: the "
        "input's where an encoder exists, else h264).",
        show_default=False,
    ),
]
VideoDeflickerOpt = Annotated[
    float,
    typer.Option(
        "--video-deflicker",
        metavar="S",
        min=0.0,
        max=0.95,
        help="Video inputs: blend each frame with the previous output by S where the "
        "picture is still (never where it moves), against flicker; 0 off (README: Video).",
    ),
]
VideoStrictOpt = Annotated[
    bool,
    typer.Option(
        "--video-strict",
        help="Video inputs: fail a clip at its first damaged packet (default: skip it "
        "and warn with its timestamp).",
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


@dataclass(frozen=True)
class BatchOptions:
    """Everything a restore command takes besides the network: inputs, outputs, reporting."""

    output: str | None
    recursive: bool
    suffix: str | None
    fmt: OutputFormat
    jpeg_quality: int
    json_lines: bool
    max_pixels: int  # 0: no limit
    overwrite: bool
    quiet: bool
    video_quality: int = 18
    video_codec: str | None = None
    video_strict: bool = False
    video_deflicker: float = 0.0


def _restore(
    task: Task,
    inputs: list[str],
    batch: BatchOptions,
    network: RestoreSettings,
    cluster: RaySettings | None = None,
) -> None:
    quiet, output = batch.quiet, batch.output
    with errors_to_exit():
        import json
        from contextlib import closing

        from mprnet_cli.batch import run_batch
        from mprnet_cli.errors import UsageError
        from mprnet_cli.jobs import Callbacks, Destination, expand_inputs, plan_outputs
        from mprnet_cli.locations import engine_paths, location

        device_spec(network.device)
        # file:// URIs are paths; object-store URIs are for the Ray engine only
        inputs, output = engine_paths(inputs, output, ray=cluster is not None)
        if batch.json_lines and output == "-":
            raise UsageError("--json and -o - both want stdout; write the image to a file")
        network.check()
        name_suffix = f"_{task.past_tense}" if batch.suffix is None else batch.suffix
        exclude = location(output) if output not in (None, "-") else None
        expansion = expand_inputs(
            inputs, recursive=batch.recursive, suffix=name_suffix, exclude=exclude
        )
        for warning in expansion.warnings:
            say(f"mprnet: warning: {warning}", quiet=quiet)
        plan = plan_outputs(expansion, output, suffix=name_suffix, fmt=batch.fmt)
        video = _video_options(expansion.jobs, batch, ray=cluster is not None)
        if plan.destination is Destination.STDOUT and sys.stdout.isatty():
            raise UsageError(
                "-o - would print image data to the terminal; redirect stdout (> out.png)"
            )
        reporter = Reporter(len(expansion.jobs), quiet=quiet, bar=progress_enabled(quiet))

        def load() -> Restorer:
            return network.restorer(task, notify=reporter.note, quiet=quiet)

        def finished(result: Result) -> None:
            # Here, not in the loop below: results settled while the run is being stopped
            # (Ctrl-C, SIGTERM) reach this callback only, and each must get its JSON line.
            reporter.finished(result)
            if batch.json_lines:
                print_json(json.dumps(result.to_json()))

        callbacks = Callbacks(
            started=reporter.started,
            tiles=reporter.tiles,
            frames=reporter.frames,
            finished=finished,
        )
        run_options: dict[str, Any] = {
            "overwrite": batch.overwrite,
            "jpeg_quality": batch.jpeg_quality,
            "max_pixels": batch.max_pixels or None,
            "callbacks": callbacks,
        }
        # closing(): whatever stops this loop (a closed stdout, Ctrl-C between results) shuts
        # the runner down here and now (queued work dropped, the write in progress finished),
        # before the error is reported, not whenever the generator happens to be collected.
        if cluster is not None:
            results = _ray_results(
                task, expansion.jobs, plan, cluster, network, reporter, quiet, **run_options
            )
        else:
            results = run_batch(
                expansion.jobs,
                load,
                plan,
                stdin=sys.stdin.buffer,
                stdout=sys.stdout.buffer,
                raise_unexpected=debug_enabled(),
                video=video,
                **run_options,
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


def _video_options(jobs: list[Job], batch: BatchOptions, *, ray: bool) -> VideoOptions:
    """The clips' settings; video with --engine ray is refused up front, in one line."""
    from mprnet_cli.errors import UsageError
    from mprnet_cli.video import VideoOptions, is_video

    if ray and any(j.source is not None and is_video(j.source) for j in jobs):
        raise UsageError(
            "video inputs are restored by the local engine only (for now); drop --engine ray"
        )
    return VideoOptions(
        quality=batch.video_quality,
        codec=batch.video_codec,
        strict=batch.video_strict,
        deflicker=batch.video_deflicker,
    )


def _ray_results(
    task: Task,
    jobs: list[Job],
    plan: OutputPlan,
    cluster: RaySettings,
    network: RestoreSettings,
    reporter: Reporter,
    quiet: bool,
    **kw: Any,
) -> Generator[Result, None, None]:
    """The Ray engine's results (`mprnet_cli.runners.ray`); weights resolved here, once."""
    from mprnet_cli.runners import load_ray
    from mprnet_cli.weights import resolve

    actors = network.ray_network(task)
    results: Generator[Result, None, None] = load_ray().restore_files(
        jobs,
        plan,
        weights=lambda: resolve(
            task, weights=network.weights, model=network.model, notify=reporter.note, quiet=quiet
        ),
        network=actors,
        settings=cluster,
        **kw,
    )
    return results


def register(app: typer.Typer, task: Task) -> None:
    """Add the command named after `task`, with its help."""

    def command(
        inputs: Annotated[
            list[str],
            typer.Argument(
                metavar="INPUT",
                help="Image or video files, folders, quoted globs ('photos/**/*.jpg'), or - "
                "for stdin.",
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
        video_quality: VideoQualityOpt = 18,
        video_codec: VideoCodecOpt = None,
        video_strict: VideoStrictOpt = False,
        video_deflicker: VideoDeflickerOpt = 0.0,
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
        network = RestoreSettings(
            weights=weights,
            model=model,
            device=device,
            precision=precision,
            backend=backend,
            tile=parse_tile(tile),
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            compile=compile_model,
            strength=strength,
            ensemble=ensemble,
            hide_split_lines=hide_split_lines,
            threads=threads,
        )
        batch = BatchOptions(
            output=output,
            recursive=recursive,
            suffix=suffix,
            fmt=parse_format(fmt),
            jpeg_quality=jpeg_quality,
            json_lines=json_lines,
            max_pixels=max_pixels,
            overwrite=overwrite,
            quiet=quiet,
            video_quality=video_quality,
            video_codec=video_codec,
            video_strict=video_strict,
            video_deflicker=video_deflicker,
        )
        _restore(task, inputs, batch, network, cluster)

    command.__doc__ = (
        f"{task.summary}\n\n"
        f"Writes <stem>_{task.past_tense}<ext> next to each input, as the same kind of file "
        "(format, bit depth, alpha, gray, ICC profile, EXIF; upright). Existing outputs are "
        "skipped, so rerunning an interrupted batch resumes it.\n\n"
        "Exit codes: 0 all done (restored or skipped), 1 some inputs failed, "
        "2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
    )
    app.command(task.value)(command)
