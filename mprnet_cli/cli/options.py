"""Options more than one command takes: `Annotated` aliases, their parsers, and the
typed settings of the network they add up to.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from mprnet_cli.choices import (
    DEFAULT_SPLIT_LINES,
    BackendChoice,
    Ensemble,
    ModelChoice,
    Precision,
    SplitLines,
)
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.api import Restorer
    from mprnet_cli.runners.ray import NetworkSettings

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
SplitLinesOpt = Annotated[
    Optional[SplitLines],  # noqa: UP045
    typer.Option(
        "--split-lines",
        help="The network's split lines (centre row/column of the image or of each tile): "
        "keep (default) leaves them, fix re-runs thin windows across them (12-19% more "
        "pixels through the network on 1-MP photos, more on small ones), hide blends "
        "three shifted passes (3-5x the time).",
        show_default=False,
    ),
]
HideSplitLinesOpt = Annotated[
    bool,
    typer.Option("--hide-split-lines", help="Same as --split-lines hide."),
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
    from mprnet_cli.tiling import ALIGN, valid_tile  # numpy only: no torch for a usage error

    if not valid_tile(tile):
        raise typer.BadParameter(
            f"must be 0, auto or a multiple of {ALIGN} (at least {ALIGN})", param_hint="--tile"
        )
    return tile


def parse_split_lines(value: SplitLines | None, hide: bool) -> SplitLines:
    """`--split-lines` and its alias `--hide-split-lines`, as a usage error if they clash."""
    from mprnet_cli.choices import split_lines_choice
    from mprnet_cli.errors import UsageError

    try:
        return split_lines_choice(value, hide)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--split-lines") from None


def parse_tasks(names: list[Task] | list[str] | None) -> list[Task]:
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


def one_task(name: Task | str) -> Task:
    (task,) = parse_tasks([name])
    return task


#: `RestoreSettings` fields that are not the network's own settings (the rest are passed by
#: name to `Restorer` and to `runners.ray.NetworkSettings`).
_NOT_NETWORK = frozenset({"weights", "model", "threads"})


@dataclass(frozen=True)
class RestoreSettings:
    """The network options of a restore or eval command, parsed and typed once.

    Field names are those of `Restorer` and `runners.ray.NetworkSettings`, so both are
    built from `network()` without listing the fields again.
    """

    weights: Path | None = None
    model: ModelChoice = ModelChoice.AUTO
    device: str = "auto"
    precision: Precision = Precision.AUTO
    backend: BackendChoice = BackendChoice.AUTO
    tile: int | None = None  # None: from free memory, 0: one pass
    tile_overlap: int | None = None  # None: the default (an explicit one must fit the tile)
    tile_batch: int = 1
    compile: bool = False
    strength: float = 1.0
    ensemble: Ensemble = Ensemble.OFF
    split_lines: SplitLines = DEFAULT_SPLIT_LINES
    threads: int | None = None

    def check(self) -> None:
        """Usage errors the single options cannot see: an explicit overlap as big as the tile."""
        from mprnet_cli.errors import UsageError

        tile, overlap = self.tile, self.tile_overlap
        if tile and overlap is not None and overlap >= tile:
            raise UsageError(
                f"--tile-overlap {overlap} must be smaller than --tile {tile} "
                f"(e.g. --tile-overlap {min(32, tile // 4)})"
            )

    def network(self) -> dict[str, Any]:
        """The settings `Restorer` and `runners.ray.NetworkSettings` share, by field name."""
        from mprnet_cli.tiling import DEFAULT_OVERLAP

        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_NETWORK}
        if values["tile_overlap"] is None:
            values["tile_overlap"] = DEFAULT_OVERLAP
        return values

    def restorer(self, task: Task, **kwargs: Any) -> Restorer:
        """A local `Restorer` with these settings (`kwargs`: notify, quiet, tile_for_speed)."""
        from mprnet_cli.api import Restorer
        from mprnet_cli.device import set_threads

        set_threads(self.threads)
        return Restorer(task, weights=self.weights, model=self.model, **self.network(), **kwargs)

    def ray_network(self, task: Task) -> NetworkSettings:
        """The Ray actors' settings (weights are resolved once by the driver, not here)."""
        from mprnet_cli.runners import load_ray

        if self.compile:
            from mprnet_cli.errors import UsageError

            raise UsageError("--compile is not supported with --engine ray yet; drop it")
        settings: NetworkSettings = load_ray().NetworkSettings(
            task, threads=self.threads, **self.network()
        )
        return settings
