"""Validation on the two held-out photos (never trained on, not test data): used to pick weights.

For each weights file, restores 256-px crops of `data/samples/*.png` degraded with
fixed seeds by the task's conditions, and prints mean PSNR (RGB; Y for derain).

    python3 benchmarks/validate_heldout.py denoise W1.safetensors W2.safetensors
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.degradations.synthesis import (
    add_gaussian_noise,
    add_poisson_gaussian_noise,
    random_blur,
    random_rain,
)
from mprnet_cli.evaluation.metrics import measure
from mprnet_cli.imageio import read_image, to_uint8
from mprnet_cli.inference.pipeline import TileOptions, restore_array
from mprnet_cli.model.checkpoint import build_model, read_checkpoint


def crops(size: int = 256) -> list[np.ndarray]:
    out = []
    for path in sorted(Path("data/samples").glob("*.png")):
        rgb = read_image(path).rgb
        h, w = rgb.shape[:2]
        for y, x in ((0, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)):
            out.append(np.ascontiguousarray(rgb[y : y + size, x : x + size]))
    return out


def conditions(task: str):  # type: ignore[no-untyped-def]
    if task == "denoise":
        for sigma in (15, 25, 50):
            yield f"gauss{sigma}", lambda t, g, s=sigma: add_gaussian_noise(t, s / 255, g)
        for shot in (1e-3, 4e-3, 1e-2):
            read = math.exp(2.18 * math.log(shot) + 1.20)
            yield (
                f"camera{shot:g}",
                lambda t, g, a=shot, b=read: add_poisson_gaussian_noise(t, a, b, g, linear=True),
            )
    elif task == "derain":
        yield "rain", random_rain
    else:
        yield "blur", random_blur


def main() -> None:
    task, weights = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    images = crops()
    for wpath in weights:
        engine = TorchBackend(build_model(read_checkpoint(wpath)), torch.device("cpu"))
        row = []
        for name, fn in conditions(task):
            scores = []
            for i, clean in enumerate(images):
                g = torch.Generator().manual_seed(1000 + i)
                x = torch.from_numpy(clean).permute(2, 0, 1)[None]
                noisy = fn(x, g)[0].permute(1, 2, 0).numpy()
                noisy = to_uint8(noisy).astype(np.float32) / 255
                out, _ = restore_array(engine, noisy, TileOptions(tile=0))
                out = to_uint8(out).astype(np.float32) / 255
                scores.append(measure(out, clean_q(clean), y_channel=task == "derain")[0])
            row.append(f"{name} {np.mean(scores):.2f}")
        print(wpath, " | ".join(row), flush=True)


def clean_q(x: np.ndarray) -> np.ndarray:
    return to_uint8(x).astype(np.float32) / 255


if __name__ == "__main__":
    main()
