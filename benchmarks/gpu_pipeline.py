"""Large images on a GPU: measured memory per pixel, the auto tile it implies, and throughput.

For each published network (random weights: speed and memory do not depend on
the values) and precision, this measures the peak memory of one forward pass at
two sizes, fits bytes = a + b * pixels, asks `pipeline.auto_tile` what it would
choose for a W x H photo from the free GPU memory, then restores such a photo
with the full pipeline (tiles, blending) and reports seconds, megapixels per
second and peak memory.

    python3 benchmarks/gpu_pipeline.py --size 4000x3000 --json gpu_pipeline.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.host.device import Precision
from mprnet_cli.inference.pipeline import TileOptions, auto_tile, restore_array
from mprnet_cli.model.network import MPRNet
from mprnet_cli.weights import published_configs


def forward_peak(engine: TorchBackend, side: int) -> int:
    x = torch.rand(1, 3, side, side)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    engine(x)
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--tasks", default="derain,denoise,deblur")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    # A smooth random "photo" plus texture, so nothing is degenerate.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.5 + 0.25 * np.sin(xx / 97.0)[..., None] * np.cos(yy / 61.0)[..., None]
    image = np.clip(
        base + 0.05 * rng.standard_normal((height, width, 3), dtype=np.float32), 0, 1
    ).astype(np.float32)
    del yy, xx, base
    rows = []
    for task in args.tasks.split(","):
        for prec in args.precisions.split(","):
            torch.manual_seed(0)
            model = MPRNet(published_configs()[task])
            engine = TorchBackend(model, device, Precision(prec))
            forward_peak(engine, 256)  # warm-up (cuDNN autotuning, allocator)
            p1, p2 = forward_peak(engine, 512), forward_peak(engine, 1024)
            per_pixel = (p2 - p1) / (1024 * 1024 - 512 * 512)
            engine.capabilities = dataclasses.replace(  # 10% headroom, as the registry stores it
                engine.capabilities, bytes_per_pixel=per_pixel * 1.1
            )
            free, total = torch.cuda.mem_get_info()
            tile = auto_tile(engine, height + (-height) % 8, width + (-width) % 8)
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            _, stats = restore_array(engine, image, TileOptions(tile=tile))
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            row = {
                "task": task,
                "precision": prec,
                "bytes_per_pixel": per_pixel,
                "fixed_bytes": p1 - per_pixel * 512 * 512,
                "free_gib": free / 2**30,
                "total_gib": total / 2**30,
                "auto_tile": tile,
                "tiles": stats.tiles,
                "seconds": seconds,
                "megapixels_per_second": width * height / seconds / 1e6,
                "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
                "image": f"{width}x{height}",
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            del engine, model
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
