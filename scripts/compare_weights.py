#!/usr/bin/env python3
"""Candidate weights against the bundled ones on held-out crops, with the replace rule.

Why: a retrained network replaces a bundled file only where it is better on images it
never saw: mean PSNR at least --min-gain (0.3) dB higher AND no crop worse by more than
--max-loss (0.5) dB. For each task with a candidate (CANDIDATES/<task>.safetensors, as
scripts/train_bundled.py writes them), --crop-px crops of the held-out photos (--images,
default data/samples: the two photos fetch_training_data.py holds out of training) are
degraded by the task's training synthesis with a fixed seed per crop and restored whole
by both networks (PyTorch fp32); PSNR on the 8-bit result (Y for derain, RGB otherwise,
as `mprnet eval`). Prints one table per task and the verdict; --replace copies the
winners over weights/ and updates weights/registry.json (sha256 and size).

    python3 scripts/compare_weights.py runs/retrain [--replace]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mprnet_cli.backends.torch import TorchBackend  # noqa: E402
from mprnet_cli.degradations.synthesis import degrade  # noqa: E402
from mprnet_cli.evaluation.evaluate import y_channel_for  # noqa: E402
from mprnet_cli.evaluation.metrics import measure  # noqa: E402
from mprnet_cli.imageio import list_images, read_image, to_uint8  # noqa: E402
from mprnet_cli.inference.pipeline import TileOptions, restore_array  # noqa: E402
from mprnet_cli.model.checkpoint import build_model, read_checkpoint  # noqa: E402
from mprnet_cli.tasks import Task  # noqa: E402

REGISTRY = ROOT / "weights" / "registry.json"


def crops(folder: Path, size: int) -> list[tuple[str, np.ndarray]]:
    """Three crops per photo (corners and centre), named photo@y,x."""
    out = []
    for path in list_images(folder):
        rgb = read_image(path).rgb
        h, w = rgb.shape[:2]
        s = min(size, h, w) // 8 * 8
        for y, x in ((0, 0), (h - s, w - s), ((h - s) // 2, (w - s) // 2)):
            out.append((f"{path.stem}@{y},{x}", np.ascontiguousarray(rgb[y : y + s, x : x + s])))
    return out


def score(a: np.ndarray, target: np.ndarray, y: bool) -> float:
    """PSNR of the 8-bit result, as `mprnet eval` measures it."""
    a8 = to_uint8(a).astype(np.float32) / np.float32(255.0)
    return measure(a8, target, y_channel=y)[0]


def compare(task: Task, candidate: Path, current: Path, images: list[tuple[str, np.ndarray]],
            min_gain: float, max_loss: float) -> bool:  # fmt: skip
    nets = {k: TorchBackend(build_model(read_checkpoint(p)), torch.device("cpu"))
            for k, p in (("bundled", current), ("candidate", candidate))}  # fmt: skip
    y = y_channel_for(task)
    rows = []
    for k, (name, clean) in enumerate(images):
        g = torch.Generator().manual_seed(1000 + k)
        x = torch.from_numpy(clean.transpose(2, 0, 1)[None].copy())
        bad = degrade(task.value, x, g)[0].numpy().transpose(1, 2, 0)
        bad = np.ascontiguousarray(bad, dtype=np.float32)
        res = {n: score(restore_array(e, bad, TileOptions(tile=0))[0], clean, y)
               for n, e in nets.items()}  # fmt: skip
        rows.append((name, score(bad, clean, y), res["bundled"], res["candidate"]))
    print(f"\n{task.value}: {candidate} vs {current.name} ({'Y' if y else 'RGB'} PSNR, dB)")
    print(f"{'crop':28s} {'input':>7s} {'bundled':>8s} {'candidate':>9s} {'gain':>6s}")
    for name, inp, old, new in rows:
        print(f"{name:28s} {inp:7.2f} {old:8.2f} {new:9.2f} {new - old:+6.2f}")
    gains = np.array([new - old for _, _, old, new in rows])
    mean_old = float(np.mean([r[2] for r in rows]))
    mean_new = float(np.mean([r[3] for r in rows]))
    ok = mean_new - mean_old >= min_gain and float(gains.min()) >= -max_loss
    print(f"{'mean':28s} {np.mean([r[1] for r in rows]):7.2f} {mean_old:8.2f} {mean_new:9.2f} "
          f"{mean_new - mean_old:+6.2f}  worst {gains.min():+.2f}")  # fmt: skip
    verdict = "REPLACE" if ok else "keep the bundled"
    print(f"rule: mean gain >= {min_gain} dB and no crop worse by > {max_loss} dB -> {verdict}")
    return ok


def replace(task: Task, candidate: Path) -> None:
    registry = json.loads(REGISTRY.read_text())
    entry = registry["bundled"][task.value]
    dest = ROOT / "weights" / entry["file"]
    if read_checkpoint(candidate).config.to_dict() != entry["config"]:
        raise SystemExit(f"{candidate}: not the bundled {task.value} configuration; not replaced")
    shutil.copyfile(candidate, dest)
    data = dest.read_bytes()
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    if "size" in entry:
        entry["size"] = len(data)
    REGISTRY.write_text(json.dumps(registry, indent=2) + "\n")
    print(f"replaced {dest} (registry updated)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("candidates", type=Path, help="folder with <task>.safetensors files")
    p.add_argument("--images", type=Path, default=ROOT / "data" / "samples")
    p.add_argument("--crop-px", type=int, default=256)
    p.add_argument("--min-gain", type=float, default=0.3)
    p.add_argument("--max-loss", type=float, default=0.5)
    p.add_argument("--current", type=Path, default=ROOT / "weights", help="bundled weights")
    p.add_argument("--replace", action="store_true", help="copy winners over weights/")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    if not args.images.is_dir():
        print(f"no held-out photos in {args.images}: see scripts/fetch_training_data.py",
              file=sys.stderr)  # fmt: skip
        return 2
    images = crops(args.images, args.crop_px)
    registry = json.loads(REGISTRY.read_text())["bundled"]
    found = 0
    for task in Task:
        candidate = args.candidates / f"{task.value}.safetensors"
        if not candidate.is_file():
            continue
        found += 1
        current = args.current / registry[task.value]["file"]
        if compare(task, candidate, current, images, args.min_gain, args.max_loss) and args.replace:
            replace(task, candidate)
    if not found:
        print(f"no <task>.safetensors in {args.candidates}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
