"""Is reduced precision safe? PSNR of bf16/fp16 outputs against fp32, on real photos.

`--precision auto` may only pick a reduced precision where its output stays
within 45 dB PSNR of float32 for every task; this script is how that is
measured. For each weights file and each photo it restores the photo (and a
degraded copy of it, made with the task's own synthetic degradation and a
fixed seed) in fp32 and in each reduced precision, then reports PSNR(reduced,
fp32) on the 8-bit outputs, the worst case, and whether any output was
non-finite (fp16 overflow).

    python3 benchmarks/precision_check.py --weights W1.safetensors W2.pth \
        --images data/samples --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mprnet_cli.backends import BackendSpec, create
from mprnet_cli.choices import BackendChoice
from mprnet_cli.degradations.synthesis import degrade
from mprnet_cli.evaluation.metrics import psnr
from mprnet_cli.host.device import Precision, resolve_device, supports_precision
from mprnet_cli.imageio import read_image, to_uint8
from mprnet_cli.inference.pipeline import TileOptions, restore_array
from mprnet_cli.model import MPRNet
from mprnet_cli.model.checkpoint import build_model, read_checkpoint
from mprnet_cli.weights import published_configs


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the two images as the 8-bit files they would be written as."""
    return psnr(to_uint8(a), to_uint8(b), 255)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        type=Path,
        required=True,
        help="weights files, or random:TASK for the published width with seeded random weights",
    )
    parser.add_argument(
        "--openvino", action="store_true", help="also the OpenVINO backend (fp32, bf16 hints)"
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of photos")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=512, help="centre crop size (0 = whole photo)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    device = resolve_device(args.device)
    photos = sorted(
        p for p in args.images.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif"}
    )
    rows = []
    for wpath in args.weights:
        if str(wpath).startswith("random:"):
            task = str(wpath).split(":", 1)[1]
            torch.manual_seed(0)
            model = MPRNet(published_configs()[task]).eval()
        else:
            ckpt = read_checkpoint(wpath)
            task = ckpt.metadata.get("task", "denoise")
            model = build_model(ckpt)
        for photo in photos:
            rgb = read_image(photo).rgb
            if args.size:
                h, w = rgb.shape[:2]
                s = min(args.size, h, w)
                rgb = np.ascontiguousarray(
                    rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
                )
            gen = torch.Generator().manual_seed(0)
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
            degraded = degrade(task, x, gen)[0].permute(1, 2, 0).numpy().copy()
            for label, image in (("clean", rgb), ("degraded", degraded)):
                outputs: dict[str, np.ndarray] = {}
                runs: list[tuple[str, Precision]] = [
                    ("torch", p) for p in (Precision.FP32, Precision.BF16, Precision.FP16)
                ]
                if args.openvino and device.type == "cpu":
                    runs += [("openvino", Precision.FP32), ("openvino", Precision.BF16)]
                for backend_name, precision in runs:
                    if not supports_precision(device, precision) or (
                        device.type == "cpu" and precision is Precision.FP16
                    ):
                        continue
                    engine = create(
                        BackendChoice(backend_name), BackendSpec(model, device, precision)
                    )
                    name = (
                        precision.value if engine.name == "torch" else f"openvino-{precision.value}"
                    )
                    t0 = time.perf_counter()
                    out, _ = restore_array(engine, image, TileOptions(tile=0))
                    outputs[name] = out
                    row = {
                        "weights": wpath.name,
                        "task": task,
                        "photo": photo.name,
                        "input": label,
                        "precision": name,
                        "seconds": time.perf_counter() - t0,
                        "finite": bool(np.isfinite(out).all()),
                        "psnr_vs_fp32": psnr8(out, outputs["fp32"]) if name != "fp32" else None,
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    worst: dict[str, float] = {}
    for row in rows:
        if row["psnr_vs_fp32"] is not None:
            key = f"{row['task']}/{row['precision']}"
            worst[key] = min(worst.get(key, math.inf), float(row["psnr_vs_fp32"]))  # type: ignore[arg-type]
    print("worst PSNR vs fp32 (dB):", json.dumps(worst), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "worst": worst}, indent=1))


if __name__ == "__main__":
    main()
