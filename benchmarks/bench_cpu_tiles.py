"""Which tile size restores a whole image fastest on the CPU?

MPRNet's per-pixel speed on a CPU falls as the input grows (its feature maps stop
fitting in the caches), so cutting an image into tiles can be faster than one pass
even though overlapping tiles compute some pixels twice. This script restores one
image with each `--tiles` setting (0 = one pass, N = tiles of at most N px with the
default 32-px overlap), in interleaved rounds so that machine noise hits every
setting alike, and reports the best time per setting and its ratio to one pass.

    python3 benchmarks/bench_cpu_tiles.py --size 1280x960 --tiles 0 384 512 768 \
        --weights weights/mprnet-derain-compact.safetensors --json out.json

Without `--weights` it uses a published-width network of `--task` with random
weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import host_info, measured_at

from mprnet_cli.backends import Backend, BackendSpec, create
from mprnet_cli.choices import BackendChoice, Precision
from mprnet_cli.inference.pipeline import TileOptions, restore_array
from mprnet_cli.inference.tiling import ALIGN, DEFAULT_OVERLAP, plan_tiles, round_up
from mprnet_cli.model import MPRNet
from mprnet_cli.weights import published_configs


def build_engine(
    weights: Path | None, task: str, seed: int, backend: str, precision: str
) -> tuple[Backend, str]:
    """The network as a restore run builds it (`--backend`, `--precision`)."""
    if weights is not None:
        from mprnet_cli.model import build_model, read_checkpoint

        model, label = build_model(read_checkpoint(weights)), str(weights)
    else:
        torch.manual_seed(seed)
        model, label = MPRNet(published_configs()[task]).eval(), f"random {task} (published width)"
    engine = create(
        BackendChoice(backend), BackendSpec(model, torch.device("cpu"), Precision(precision))
    )
    return engine, f"{label}, {engine.name} {engine.precision.value}"


def plan_overhead(h: int, w: int, tile: int) -> tuple[int, float]:
    """Tiles and pixels computed per image pixel for a tile setting."""
    ph, pw = round_up(h, ALIGN), round_up(w, ALIGN)
    if tile == 0:
        return 1, (ph * pw) / (h * w)
    overlap = min(DEFAULT_OVERLAP, tile - ALIGN)
    plan = plan_tiles(ph, pw, tile, overlap)
    computed = sum(t.height * t.width for t in plan.tiles)
    return len(plan.tiles), computed / (h * w)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x960", help="WxH of the test image")
    parser.add_argument("--tiles", nargs="+", type=int, default=[0, 256, 384, 512, 768])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--task", default="derain", choices=sorted(published_configs()))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="torch", choices=["auto", "torch", "openvino"])
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    rgb = np.random.default_rng(args.seed).random((h, w, 3), dtype=np.float32)
    engine, label = build_engine(args.weights, args.task, args.seed, args.backend, args.precision)

    restore_array(engine, rgb[:64, :64], TileOptions(tile=0))  # warm-up: threads, allocator
    times: dict[int, list[float]] = {t: [] for t in args.tiles}
    for r in range(args.rounds):
        order = args.tiles if r % 2 == 0 else list(reversed(args.tiles))
        for tile in order:
            start = time.perf_counter()
            restore_array(engine, rgb, TileOptions(tile=tile))
            times[tile].append(time.perf_counter() - start)
            print(f"round {r + 1} tile {tile:5d}: {times[tile][-1]:7.2f} s", flush=True)

    base = min(times[0]) if 0 in times else None
    rows = []
    print(f"\n{label}, {w}x{h}, {torch.get_num_threads()} threads, best of {args.rounds}")
    print(" tile  tiles  px x   best s   MP/s  vs one pass")
    for tile in args.tiles:
        n, over = plan_overhead(h, w, tile)
        best = min(times[tile])
        ratio = base / best if base else None
        rows.append(
            {
                "tile": tile,
                "tiles": n,
                "pixel_overhead": over,
                "seconds": times[tile],
                "best_seconds": best,
                "megapixels_per_second": h * w / best / 1e6,
                "throughput_vs_one_pass": ratio,
            }
        )
        shown = f"{ratio:6.2f}x" if ratio else "     -"
        print(f"{tile:5d}  {n:5d}  {over:4.2f}  {best:7.2f}  {h * w / best / 1e6:5.3f}  {shown}")
    if args.json:
        result: dict[str, Any] = {
            "schema": 1,
            "weights": label,
            "size_wxh": [w, h],
            "rounds": args.rounds,
            "host": host_info(),
            "measured_at": measured_at(),
            "runs": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False) as f:
            json.dump(result, f, indent=1)
        Path(f.name).replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
