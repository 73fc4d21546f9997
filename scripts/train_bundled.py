#!/usr/bin/env python3
"""Retrain the three bundled networks at once, sized for one lent GPU (issue 21).

Why one command: a lent H200 gives about ten usable minutes. The three trainings
(derain and deblur at width 32,16,12; denoise at 24,12,8; 4 CABs: the bundled
configurations, read from weights/registry.json) run as three `mprnet train` processes
side by side on the one GPU (each alone leaves most of an H200 idle), each stopping at
--minutes, in bf16 autocast (the trainer's default on CUDA), with the task's training
synthesis (mprnet_cli/degradations/synthesis.py) applied on the fly to the clean photos of
--data, checkpoints every --save-every steps (a run that is cut off keeps its last
checkpoint, and rerunning resumes it) and a .safetensors export per task in --out.
By default each run starts from the current bundled weights (fine-tuning: more gain
per minute than starting over); --from-scratch starts from random weights.

Data: the clean training photographs that `python3 scripts/fetch_training_data.py --out
data/train --samples data/samples` prepares from Debian packages (about 10 MP; the GPU
machine has no network, so prepare them here and carry data/ along). Never test data.

    python3 scripts/train_bundled.py --minutes 8 --out runs/retrain           # on the GPU
    python3 scripts/train_bundled.py --device cpu --minutes 0.1 --batch 1 \\
        --crop 32 --out /tmp/smoke                                             # dry run
Then: python3 scripts/compare_weights.py runs/retrain
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("derain", "deblur", "denoise")


def bundled(task: str) -> tuple[Path, str, int]:
    """(file, "N,S,O" width, CABs) of the task's bundled network, from the registry."""
    entry = json.loads((ROOT / "weights" / "registry.json").read_text())["bundled"][task]
    c = entry["config"]
    width = f"{c['n_feat']},{c['scale_unetfeats']},{c['scale_orsnetfeats']}"
    return ROOT / "weights" / entry["file"], width, int(c["num_cab"])


def command(task: str, args: argparse.Namespace) -> list[str]:
    weights, width, cabs = bundled(task)
    cmd = [
        sys.executable, "-m", "mprnet_cli", "train", task, str(args.data),
        "--out", str(args.out / f"run-{task}"),
        "--width", args.width or width, "--num-cab", str(args.num_cab or cabs),
        "--steps", str(args.steps), "--max-minutes", f"{args.minutes}",
        "--batch", str(args.batch), "--crop", str(args.crop), "--lr", f"{args.lr}",
        "--warmup", str(args.warmup), "--save-every", str(args.save_every),
        "--seed", str(args.seed), "--device", args.device,
        "--export", str(args.out / f"{task}.safetensors"), "--overwrite", "--quiet",
    ]  # fmt: skip
    if not args.from_scratch and not args.width:
        cmd += ["--init", str(weights)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "train", help="clean photos")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "retrain")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--minutes", type=float, default=8.0, help="wall time of each training")
    p.add_argument("--steps", type=int, default=0, help="0: as many as --minutes allow")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--from-scratch", action="store_true", help="random start, not the bundled")
    p.add_argument("--width", help="N,S,O for every task (smoke tests); implies --from-scratch")
    p.add_argument("--num-cab", type=int)
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(
            f"no training photos in {args.data}: run python3 scripts/fetch_training_data.py "
            "--out data/train --samples data/samples first",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    runs = {}
    for task in args.tasks.split(","):
        log = (args.out / f"train-{task}.log").open("w")
        runs[task] = (subprocess.Popen(command(task, args), env=env, stdout=log, stderr=log), log)
    failed = 0
    for task, (proc, log) in runs.items():
        code = proc.wait()
        log.close()
        tail = (args.out / f"train-{task}.log").read_text().strip().splitlines()[-1:]
        print(f"{task}: exit {code} after {time.monotonic() - start:.0f} s: {' '.join(tail)}")
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
