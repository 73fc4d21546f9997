"""Time cost of the quality options (`--ensemble 2|8`, `--hide-split-lines`) vs a plain run.

Why: docs/quality-and-split-lines.md states each option's cost, and
`--hide-split-lines` is opt-in because it costs more than 1.3x. Ratios are medians over --rounds rounds, the modes interleaved
within each round on the same image and Restorer settings, so a busy machine slows all
modes alike (absolute seconds are noisy on a shared CPU; the ratios are the result).

The image: one photo (default CBSD68's first, 481x321, the eval sets' size; --crop for
a part of it), restored in one pass as `mprnet eval` does, with a task's bundled weights.

Run: python3 benchmarks/bench_quality_cost.py --task denoise --json benchmarks/results/quality_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import host_info, measured_at

from mprnet_cli.api import Restorer
from mprnet_cli.imageio import read_image

MODES = {
    "plain": {},
    "ensemble 2": {"ensemble": 2},
    "ensemble 8": {"ensemble": 8},
    "hide-split-lines": {"hide_split_lines": True},
}
DEFAULT_IMAGE = Path("/work/shared/testdata/CBSD68/clean/3096.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="denoise")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--crop", default="", help="HxW: time a top-left crop of the photo")
    p.add_argument("--tile", type=int, default=0, help="0: one pass, as mprnet eval runs")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    rgb = read_image(args.image).rgb
    if args.crop:
        ch, cw = (int(v) for v in args.crop.split("x"))
        rgb = np.ascontiguousarray(rgb[:ch, :cw])
    restorers = {
        name: Restorer(args.task, model="bundled", device="cpu", tile=args.tile, quiet=True, **kw)
        for name, kw in MODES.items()
    }
    for r in restorers.values():  # warm-up: first-call set-up is not the option's cost
        r.restore_rgb(rgb[:64, :64])
    seconds: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(args.rounds):
        for name, r in restorers.items():
            t0 = time.perf_counter()
            r.restore_rgb(rgb)
            seconds[name].append(time.perf_counter() - t0)
    ratios = {
        name: statistics.median(s / b for s, b in zip(seconds[name], seconds["plain"], strict=True))
        for name in MODES
    }
    for name in MODES:
        print(
            f"{args.task} {name:17s} median {statistics.median(seconds[name]):6.2f} s  "
            f"{ratios[name]:.2f}x plain",
            flush=True,
        )
    if args.json:
        record = {
            "measured_at": measured_at(),
            "host": host_info(),
            "task": args.task,
            "image": args.image.name,
            "size": list(rgb.shape[:2]),
            "tile": args.tile,
            "threads": torch.get_num_threads(),
            "seconds": seconds,
            "ratio_vs_plain": ratios,
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
