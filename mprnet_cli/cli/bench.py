"""mprnet bench: speed of each network against the reference execution, in one run."""

from __future__ import annotations

from typing import Annotated

import typer

from mprnet_cli.backends.base import engine_modes
from mprnet_cli.choices import BackendChoice, Precision
from mprnet_cli.cli.options import (
    BackendOpt,
    DeviceOpt,
    PrecisionOpt,
    TasksArg,
    ThreadsOpt,
    parse_tasks,
)
from mprnet_cli.cli.output import errors_to_exit, print_json, say
from mprnet_cli.cli.values import plural, whole
from mprnet_cli.tasks import task_names


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
            f"{', '.join(engine_modes())} (default: default; --backend and --precision set what "
            "default runs).",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", metavar="N", parser=whole(1), help="Images per forward pass.")
    ] = 1,
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat", metavar="N", parser=whole(1), help="Timed runs (median is reported)."
        ),
    ] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON line per result.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Time each network (random weights); --modes reference,... compares modes in one run.

    TASK: {tasks}; several, or none for all of them.
    """
    chosen = parse_tasks(tasks)
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter("expected WxH, e.g. 512x512", param_hint="--size") from None
    if w < 8 or h < 8 or w % 8 or h % 8:
        raise typer.BadParameter("width and height must be multiples of 8", param_hint="--size")
    with errors_to_exit():
        import json as jsonlib

        from mprnet_cli.backends import bench
        from mprnet_cli.errors import UsageError
        from mprnet_cli.host.device import describe, resolve_device, set_threads

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
        say(
            f"benchmarking on {describe(dev)}, {w}x{h}, {plural(torch_threads(), 'thread')}",
            quiet=json_out,
        )

        def show(r: bench.BenchResult) -> None:
            if json_out:
                print_json(jsonlib.dumps(r.to_json()))
                return
            speed = f"{r.speedup_vs_reference:.2f}x" if r.speedup_vs_reference else "-"
            print(
                f"{r.task:8s} {r.mode:13s} {r.backend:8s} {r.precision:4s} "
                f"{r.megapixels_per_second:8.3f} MP/s  "
                f"{r.seconds_per_12mp:8.1f} s/12MP  {r.gflops:8.1f} GFLOP/s  "
                f"peak {r.peak_memory_bytes / 2**20:7.0f} MiB"
                + (f"  {speed} vs reference" if r.speedup_vs_reference else ""),
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
            on_task=lambda task, timed: say(
                f"{task}: timing {', '.join(timed)} ({plural(repeat, 'round')} at least)",
                quiet=json_out,
            ),
            default=bench.default_mode(backend, precision),
        )


bench_command.__doc__ = (bench_command.__doc__ or "").format(tasks=task_names())


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
