"""Mean per-channel colour shift of restored images against their targets (issue 21).

Why: on Rain100L images 3 and 4 the restored images scored below their rainy inputs and
looked ~3 levels darker. This separates the possible causes: decoding (the pixels
compared with a plain Pillow decode), the inference side (OpenVINO vs PyTorch fp32, the
network's raw unclipped output vs the clipped result) and the weights (the network run
on the clean TARGET itself: a faithful network leaves a clean photo's mean alone).

For each pair, on the 0-255 scale, per channel (R, G, B):
  input   mean(input) - mean(target)
  output  mean(restored) - mean(target)   (`mprnet eval`'s settings: whole image, keep)
  clean   mean(network(target)) - mean(target)
  torch   output of the PyTorch fp32 backend minus that of the default backend (max |.|)
Summary per data set: the mean over images, the most negative and most positive image.

Data sets: Rain100L and Rain100H (derain, input/target folders) and CBSD68 (denoise,
clean images degraded with --noise, seed = image index, as `mprnet eval --degrade`).

Run: python3 benchmarks/colour_shift.py --limit 10 --json benchmarks/results/colour_shift.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import host_info, measured_at
from numpy.typing import NDArray
from PIL import Image

from mprnet_cli import Restorer
from mprnet_cli.degradations.benchmark import parse_degradation
from mprnet_cli.evaluation.evaluate import iter_pairs

DATA = Path("/work/shared/testdata")
SETS = {"Rain100L": "derain", "Rain100H": "derain", "CBSD68": "denoise"}


def means(x: NDArray[np.float32]) -> NDArray[np.float64]:
    """Per-channel mean on the 0-255 scale, after 8-bit quantisation (as saved)."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).mean(axis=(0, 1))


def measure_set(name: str, limit: int, noise: str, torch_check: int) -> dict[str, Any]:
    task = SETS[name]
    kw: dict[str, Any] = {"quiet": True, "split_lines": "keep", "tile_for_speed": False}
    default = Restorer(task, model="bundled", **kw)
    reference = Restorer(task, model="bundled", backend="torch", precision="fp32", **kw)
    if name == "CBSD68":
        pairs = iter_pairs(DATA / name / "clean", None, parse_degradation(noise), limit=limit)
    else:
        pairs = iter_pairs(DATA / name / "input", DATA / name / "target", None, limit=limit)
    rows = []
    for k, (pair_name, degraded, target) in enumerate(pairs):
        out, _ = default.restore_rgb(degraded)
        clean, _ = default.restore_rgb(target)
        row: dict[str, Any] = {
            "image": pair_name,
            "input": (means(degraded) - means(target)).tolist(),
            "output": (means(out) - means(target)).tolist(),
            "clean": (means(clean) - means(target)).tolist(),
        }
        if name != "CBSD68":  # the pixels as Pillow decodes them, no colour management
            pil = np.asarray(Image.open(DATA / name / "input" / pair_name).convert("RGB"))
            row["decode_max_diff"] = float(np.abs(pil / 255.0 - degraded).max())
        if k < torch_check:
            ref, _ = reference.restore_rgb(degraded)
            row["torch_fp32_max_diff"] = float(np.abs(ref - out).max() * 255.0)
            # The network itself takes multiples of 8: compare on that top-left part.
            h8, w8 = degraded.shape[0] // 8 * 8, degraded.shape[1] // 8 * 8
            part = np.ascontiguousarray(degraded[:h8, :w8].transpose(2, 0, 1)[None])
            raw = reference.backend(part)[0].transpose(1, 2, 0)
            row["raw_minus_clipped_mean"] = (
                (raw.mean(axis=(0, 1)) - np.clip(raw, 0.0, 1.0).mean(axis=(0, 1))) * 255.0
            ).tolist()
        rows.append(row)
        print(
            f"{name:9s} {pair_name:10s} input {_fmt(row['input'])} output {_fmt(row['output'])} "
            f"clean {_fmt(row['clean'])}",
            flush=True,
        )
    summary = {
        key: {
            "mean": np.mean([r[key] for r in rows], axis=0).round(2).tolist(),
            "min_image": min(rows, key=lambda r: float(np.mean(r[key])))["image"],
            "min": min(float(np.mean(r[key])) for r in rows),
            "max": max(float(np.mean(r[key])) for r in rows),
        }
        for key in ("input", "output", "clean")
    }
    return {
        "set": name,
        "task": task,
        "backend": default.backend.name,
        "images": rows,
        "summary": summary,
    }


def _fmt(v: list[float]) -> str:
    return "[" + " ".join(f"{x:+5.2f}" for x in v) + "]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="Rain100L,Rain100H,CBSD68")
    p.add_argument("--limit", type=int, default=None, help="first N pairs of each set")
    p.add_argument("--noise", default="noise:25", help="CBSD68's degradation")
    p.add_argument("--torch-check", type=int, default=2, help="pairs also run in PyTorch fp32")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = []
    for name in args.sets.split(","):
        results.append(measure_set(name, args.limit, args.noise, args.torch_check))
        s = results[-1]["summary"]
        print(
            f"{name}: mean shift input {s['input']['mean']} output {s['output']['mean']} "
            f"(images {s['output']['min']:+.2f}..{s['output']['max']:+.2f}) "
            f"network on the clean target {s['clean']['mean']}",
            flush=True,
        )
        if args.json:
            record = {
                "measured_at": measured_at(),
                "host": host_info(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "results": results,
            }
            args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
