"""mprnet train: flags to `TrainSettings`, a progress bar, and the export."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from mprnet_cli.cli.options import DeviceOpt, QuietOpt, TaskArg, ThreadsOpt, one_task
from mprnet_cli.cli.output import errors_to_exit, say
from mprnet_cli.cli.values import whole


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
        int, typer.Option("--num-cab", metavar="N", parser=whole(1), help="CABs per stage-3 block.")
    ] = 4,
    steps: Annotated[
        int,
        typer.Option(
            "--steps",
            metavar="N",
            parser=whole(0),
            help="Optimiser steps in total (0: fit to --max-minutes).",
        ),
    ] = 20_000,
    batch: Annotated[
        int, typer.Option("--batch", metavar="N", parser=whole(1), help="Crops per step.")
    ] = 8,
    crop: Annotated[
        int,
        typer.Option("--crop", metavar="N", parser=whole(16), help="Crop size (multiple of 8)."),
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
            "--save-every",
            metavar="N",
            parser=whole(1),
            help="Checkpoint and validate every N steps.",
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
        int,
        typer.Option("--warmup", metavar="N", parser=whole(0), help="Learning-rate warm-up steps."),
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
    task = one_task(task_name)
    n, s, o = _parse_width(width)
    with errors_to_exit():
        from mprnet_cli.errors import OutputExistsError
        from mprnet_cli.host.device import resolve_device, set_threads
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
