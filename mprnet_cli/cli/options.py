"""Options more than one command takes: `Annotated` aliases, their parsers, and the
declaration of each `RestoreSettings` field on the command line (`SETTINGS_OPTIONS`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Optional

import typer

from mprnet_cli.backends.base import auto_help
from mprnet_cli.choices import (
    BackendChoice,
    Ensemble,
    ModelChoice,
    OutputFormat,
    Precision,
    SplitLines,
)
from mprnet_cli.cli.output import errors_to_exit
from mprnet_cli.cli.values import choice, number, whole
from mprnet_cli.errors import UsageError
from mprnet_cli.imageio.formats import FORMAT_HELP, LOSSY_NAMES
from mprnet_cli.imageio.formats import parse_format as format_choice
from mprnet_cli.settings import RestoreSettings, settings_of
from mprnet_cli.tasks import Task, task_names

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
        metavar="FILE",
        help="Weights file (.pth/.pt/.safetensors) to use instead of the task's.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    ModelChoice,
    typer.Option(
        "--model", "-m", parser=choice(ModelChoice), help="Which weights when no file is given."
    ),
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
        parser=choice(Precision),
        help="Arithmetic precision (auto: bf16 on CUDA GPUs and on CPUs with native bf16, "
        "else fp32).",
    ),
]
BackendOpt = Annotated[
    BackendChoice,
    typer.Option(
        "--backend",
        envvar="MPRNET_BACKEND",
        parser=choice(BackendChoice),
        help=f"Inference engine (auto: {auto_help()}).",
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
        parser=whole(0),
        metavar="N",
        help="Overlap between tiles in pixels, less than --tile (default: 32, less for "
        "smaller tiles).",
        show_default=False,
    ),
]
TileBatchOpt = Annotated[
    int,
    typer.Option(
        "--tile-batch", metavar="N", parser=whole(1), help="Tiles per forward pass (GPU)."
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", "-f", help="Replace existing outputs.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        metavar="FORMAT",
        help=FORMAT_HELP,
    ),
]
JpegQualityOpt = Annotated[
    int,
    typer.Option(
        "--jpeg-quality", metavar="Q", parser=whole(1, 100), help=f"{LOSSY_NAMES} quality (1-100)."
    ),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        metavar="N",
        parser=whole(0),
        show_default=False,
        help="Refuse images with more pixels than this (decompression bombs); 0: no limit "
        "(default: 16384x16384, 268 MP).",
    ),
]

TaskArg = Annotated[
    Task, typer.Argument(metavar="TASK", parser=choice(Task), help=f"{task_names()}.")
]
#: Hidden from the Arguments list, where Typer would print a type name
#: (`<list[derain|deblur|denoise]>`): each command's help text says what TASK takes.
TasksArg = Annotated[
    list[Task] | None, typer.Argument(metavar="TASK", parser=choice(Task), hidden=True)
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
        metavar="S",
        parser=number(0.0, 1.0),
        help="Blend the result with the input: 1 fully restored, 0 the input unchanged "
        "(for textures the network smooths too much).",
    ),
]
EnsembleOpt = Annotated[
    Ensemble,
    typer.Option(
        "--ensemble",
        parser=choice(Ensemble),
        help="Average over flipped/rotated copies: 1 off, 2 the input and its left-right "
        "mirror, 8 all rotations and mirrors (2x / 8x the time).",
    ),
]
SplitLinesOpt = Annotated[
    Optional[SplitLines],  # noqa: UP045
    typer.Option(
        "--split-lines",
        help="The network's split lines (centre row/column of the image or of each tile): "
        "fix (default) runs the network on its input uncut, so it draws none (same "
        "time), keep runs it as published (lines included), hide blends three "
        "shifted passes of the published network (3-5x the time).",
        show_default=False,
    ),
]
HideSplitLinesOpt = Annotated[
    bool,
    typer.Option(
        "--hide-split-lines",
        help="Same as --split-lines hide.",
    ),
]
ThreadsOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--threads",
        metavar="N",
        parser=whole(1),
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
    from mprnet_cli.inference.tiling import (
        ALIGN,
        valid_tile,
    )  # numpy only: no torch for a usage error

    if not valid_tile(tile):
        raise typer.BadParameter(
            f"must be 0, auto or a multiple of {ALIGN} (at least {ALIGN})", param_hint="--tile"
        )
    return tile


def parse_tasks(names: list[Task] | list[str] | None) -> list[Task]:
    if not names:
        return list(Task)
    out = []
    for name in names:
        try:
            out.append(Task(name))
        except ValueError:
            raise typer.BadParameter(
                f"unknown task {name!r}: choose from {task_names()}",
                param_hint="TASK",
            ) from None
    return out


def one_task(name: Task | str) -> Task:
    (task,) = parse_tasks([name])
    return task


def parse_format(value: str) -> OutputFormat:
    """--format value in any spelling the table of formats knows -> `OutputFormat`."""
    try:
        return format_choice(value)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--format") from None


VideoQualityOpt = Annotated[
    int,
    typer.Option(
        "--video-quality",
        metavar="CRF",
        parser=whole(0, 63),
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
        parser=number(0.0, 0.95),
        help="Video inputs: blend each frame with the previous output by S where the "
        "picture is still (never where it moves), against flicker; 0 off (docs/video.md).",
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


# --------------------------------------------------------------------------- settings

_FIELD_DEFAULT: Final = object()


@dataclass(frozen=True)
class SettingOption:
    """How one `RestoreSettings` field is spelled on the command line."""

    annotation: Any  # an `Annotated[type, typer.Option(...)]` alias
    parse: Callable[[Any], Any] | None = None  # command-line value -> field value
    default: Any = _FIELD_DEFAULT  # the command-line spelling of the field's default


#: The command-line declaration of each `RestoreSettings` field a command may offer
#: (defaults come from the field itself). `settings_options` adds them to a command.
SETTINGS_OPTIONS: Final[dict[str, SettingOption]] = {
    "format": SettingOption(FormatOpt, parse_format, "same"),
    "jpeg_quality": SettingOption(JpegQualityOpt),
    "max_pixels": SettingOption(MaxPixelsOpt),
    "weights": SettingOption(WeightsOpt),
    "model": SettingOption(ModelOpt),
    "device": SettingOption(DeviceOpt),
    "precision": SettingOption(PrecisionOpt),
    "backend": SettingOption(BackendOpt),
    "tile": SettingOption(TileOpt, parse_tile, "auto"),
    "tile_overlap": SettingOption(OverlapOpt),
    "tile_batch": SettingOption(TileBatchOpt),
    "strength": SettingOption(StrengthOpt),
    "ensemble": SettingOption(EnsembleOpt),
    "split_lines": SettingOption(SplitLinesOpt, default=None),
    "hide_split_lines": SettingOption(HideSplitLinesOpt, default=False),
    "threads": SettingOption(ThreadsOpt),
    "compile": SettingOption(CompileOpt),
    "video_quality": SettingOption(VideoQualityOpt),
    "video_codec": SettingOption(VideoCodecOpt),
    "video_strict": SettingOption(VideoStrictOpt),
    "video_deflicker": SettingOption(VideoDeflickerOpt),
}

Command = Callable[..., None]


def _cli_default(name: str) -> Any:
    declared = SETTINGS_OPTIONS[name].default
    if declared is not _FIELD_DEFAULT:
        return declared
    return RestoreSettings.__dataclass_fields__[name].default


def settings_from_options(values: Mapping[str, Any], **fixed: Any) -> RestoreSettings:
    """The command-line values of `SETTINGS_OPTIONS` (by field name) -> `RestoreSettings`;
    `fixed`: fields a command sets itself. A bad combination exits as a usage error."""
    parsed = {
        name: (SETTINGS_OPTIONS[name].parse or (lambda v: v))(value)
        for name, value in values.items()
    }
    with errors_to_exit():
        return settings_of(None, **parsed, **fixed)


def settings_options(*names: str, **fixed: Any) -> Callable[[Command], Command]:
    """Give a command the options of `names` (all of `SETTINGS_OPTIONS` when none) in place
    of its `settings: RestoreSettings` parameter, which receives them built into one value.

    The command declares no option of its own for them, so a new setting reaches every
    command that offers it from its one `SETTINGS_OPTIONS` line.
    """
    chosen = names or tuple(SETTINGS_OPTIONS)

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        params = list(signature.parameters.values())
        at = [p.name for p in params].index("settings")
        added = [
            inspect.Parameter(
                name,
                params[at].kind,
                default=_cli_default(name),
                annotation=SETTINGS_OPTIONS[name].annotation,
            )
            for name in chosen
        ]

        def wrapper(**kwargs: Any) -> None:
            values = {name: kwargs.pop(name) for name in chosen}
            command(**kwargs, settings=settings_from_options(values, **fixed))

        wrapper.__name__ = command.__name__
        wrapper.__doc__ = command.__doc__
        new = signature.replace(parameters=[*params[:at], *added, *params[at + 1 :]])
        wrapper.__signature__ = new  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in new.parameters.values()}
        return wrapper

    return decorate
