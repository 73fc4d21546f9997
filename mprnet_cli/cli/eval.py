"""mprnet eval: PSNR/SSIM over degraded/clean pairs with the paper's protocol."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mprnet_cli.cli.options import QuietOpt, TaskArg, one_task, settings_options
from mprnet_cli.cli.output import errors_to_exit, print_json, say
from mprnet_cli.cli.values import whole
from mprnet_cli.settings import RestoreSettings

# The paper's protocol restores whole images: tile only where memory demands it, so
# scores do not depend on the device's speed-minded tile choice.
_EVAL_SETTINGS = settings_options(
    "weights",
    "model",
    "device",
    "precision",
    "backend",
    "tile",
    "strength",
    "ensemble",
    "split_lines",
    "hide_split_lines",
    "threads",
    tile_for_speed=False,
)


@_EVAL_SETTINGS
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
    *,
    settings: RestoreSettings,
    seed: Annotated[
        int,
        typer.Option("--seed", metavar="N", help="Base seed of --degrade (image i uses seed + i)."),
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            metavar="N",
            parser=whole(1),
            help="Only the first N pairs.",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON line per image, then a summary line.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """PSNR/SSIM over degraded/clean pairs (the paper's protocol), and the same for the untouched input."""
    task = one_task(task_name)
    with errors_to_exit():
        import json as jsonlib

        from mprnet_cli.degradations.benchmark import parse_degradation
        from mprnet_cli.evaluation.evaluate import evaluate, iter_pairs

        degradation = parse_degradation(degrade) if degrade else None
        pairs = iter_pairs(input_dir, target_dir, degradation, seed=seed, limit=limit)
        from mprnet_cli.api import load_restorer

        restorer = load_restorer(task, settings, notify=lambda m: say(m, quiet=quiet), quiet=quiet)

        def show(r: Any) -> None:
            if json_out:
                print_json(jsonlib.dumps(asdict(r)))
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
            print_json(jsonlib.dumps(summary))
        print(
            f"{task.value} on {input_dir} ({report.images} images, {report.protocol}): "
            f"{report.psnr:.2f} dB / {report.ssim:.4f}  (input {report.input_psnr:.2f} dB / "
            f"{report.input_ssim:.4f}, gain {report.gain:+.2f} dB)",
            file=sys.stderr if json_out else sys.stdout,
        )
