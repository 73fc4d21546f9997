"""How much overlapping decode/encode with the network saves on a folder of small images.

Why: `run_batch` decodes the next image and writes the previous one on worker threads while
the network runs. That can save at most the decode + encode time per image, and only when
the cores are not all busy with the network already; this measures what it really saves.

For each model it restores the same folder twice per round, sequentially (`prefetch=0,
pending=0`: decode, restore, encode one after another on one thread) and overlapped (the
CLI's defaults), alternating the order between rounds, and reports the median wall time of
each and their ratio. It also times decode and encode alone (per image), which bound the
possible gain: sequential ~ N (D + R + E), overlapped ~ N max(R, D, E) + ...

Images: `--count` PNGs of `--size`^2 pixels, smooth gradients plus noise (compress like
photos rather than like white noise). Models: `tiny` (the test suite's MPRNet, I/O-bound
at this size) and `full` (the derain-size `MPRNetConfig()`, random weights: speed does not
depend on the values). Weights are loaded once per model, and one image is restored before
timing so first-call kernel setup is not counted.

Run: python3 benchmarks/bench_batch_io.py --models tiny --count 40
     python3 benchmarks/bench_batch_io.py --models full --count 10 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mprnet_cli.api import Restorer
from mprnet_cli.imageio import OutputFormat, encode_image, read_image, resolve_format
from mprnet_cli.jobs import Status, expand_inputs, plan_outputs
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.model.network import MPRNet
from mprnet_cli.runners.local import run_batch

CONFIGS = {
    "tiny": MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, reduction=4),
    "full": MPRNetConfig(),
}


def make_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        phase = rng.random(3) * 6.28
        base = np.stack([0.5 + 0.4 * np.sin(6 * xx + 4 * yy + p) for p in phase], axis=2)
        noisy = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        Image.fromarray((noisy * 255).round().astype(np.uint8)).save(folder / f"{i:03}.png")


def save_weights(config: MPRNetConfig, path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"state_dict": MPRNet(config).state_dict(), "config": config.__dict__}, path)
    return path


def time_run(restorer: Restorer, src: Path, out: Path, *, overlapped: bool) -> float:
    exp = expand_inputs([str(src)], suffix="_x")
    plan = plan_outputs(exp, str(out), suffix="_x")
    n = 1 if overlapped else 0
    start = time.perf_counter()
    results = list(run_batch(exp.jobs, restorer, plan, overwrite=True, prefetch=n, pending=n))
    wall = time.perf_counter() - start
    assert all(r.status is Status.OK for r in results), [r.error for r in results]
    return wall


def io_alone(src: Path) -> tuple[float, float]:
    """Median decode and encode+write-free seconds per image (the most overlap can hide)."""
    dec, enc = [], []
    for path in sorted(src.glob("*.png")):
        t = time.perf_counter()
        image = read_image(path)
        dec.append(time.perf_counter() - t)
        t = time.perf_counter()
        encode_image(image.rgb, image.info, resolve_format(OutputFormat.SAME, image.info))
        enc.append(time.perf_counter() - t)
    return statistics.median(dec), statistics.median(enc)


def bench(model: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    src = work / "in"
    weights = save_weights(CONFIGS[model], work / f"{model}.pth")
    restorer = Restorer("derain", weights=weights, device="cpu", tile=0)
    warm = read_image(next(src.glob("*.png")))
    restorer.restore_rgb(warm.rgb)  # first call: kernel and allocator set-up, not timed
    t = time.perf_counter()
    restorer.restore_rgb(warm.rgb)
    restore_s = time.perf_counter() - t
    times: dict[str, list[float]] = {"sequential": [], "overlapped": []}
    for r in range(args.rounds):
        order = ["sequential", "overlapped"] if r % 2 == 0 else ["overlapped", "sequential"]
        for mode in order:
            out = work / f"out-{model}-{mode}"
            times[mode].append(time_run(restorer, src, out, overlapped=mode == "overlapped"))
    seq, ovl = (statistics.median(times[m]) for m in ("sequential", "overlapped"))
    decode_s, encode_s = io_alone(src)
    return {
        "model": model,
        "images": args.count,
        "size": args.size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "restore_s_per_image": restore_s,
        "decode_s_per_image": decode_s,
        "encode_s_per_image": encode_s,
        "sequential_s": seq,
        "overlapped_s": ovl,
        "speedup": seq / ovl,
        # what perfect overlap could give, from the per-image times measured alone
        "speedup_bound": (decode_s + restore_s + encode_s) / max(restore_s, decode_s, encode_s),
        "all_runs": times,
        "load_average_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,full", help="comma list of tiny, full")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per mode (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-io-") as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        make_images(work / "in", args.count, args.size)
        for model in args.models.split(","):
            row = bench(model.strip(), args, work)
            rows.append(row)
            print(
                f"{row['model']:>5}: {row['images']} x {row['size']}px, {row['threads']} thread(s): "
                f"restore {row['restore_s_per_image'] * 1e3:.0f} ms, decode "
                f"{row['decode_s_per_image'] * 1e3:.1f} ms, encode "
                f"{row['encode_s_per_image'] * 1e3:.1f} ms per image | sequential "
                f"{row['sequential_s']:.2f} s, overlapped {row['overlapped_s']:.2f} s, "
                f"speedup x{row['speedup']:.2f} (bound x{row['speedup_bound']:.2f}; "
                f"load average {row['load_average_1min']:.1f})",
                flush=True,
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
