"""Per-image cost of each stage a runner applies, on tiny images: the scaling model's inputs.

Why: for thumbnails the network is not what decides the rate; the stages around it are
(issue 18). This times, in one process and interleaved image by image (so the machine's
load hits every stage alike), the shared per-image stages of `mprnet_cli.runners.stages`
on N 16x16 PNGs with the tiny test network on the CPU (torch backend, 1 thread):
planning (`Listing` + `Planner.screen`, by name), decode, restore (the network),
encode + atomic write, and the record (`stages.record` + its JSON line). Medians, in ms.

Run: python3 benchmarks/bench_stages.py --count 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import host_info, measured_at
from PIL import Image

from mprnet_cli.api import load_restorer
from mprnet_cli.jobs import Listing, Planner, Screened, plan_outputs
from mprnet_cli.runners import stages
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "reference" / "tiny_checkpoint.pth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    ns = parser.parse_args()
    os.environ.setdefault("MPRNET_BACKEND", "torch")
    settings = RestoreSettings(weights=str(TINY), device="cpu", threads=1)
    restorer = load_restorer(Task.DENOISE, settings, quiet=True)
    times: dict[str, list[float]] = {
        k: [] for k in ("plan", "decode", "restore", "encode_write", "record")
    }
    with tempfile.TemporaryDirectory(prefix="mprnet-stages-") as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(ns.count):
            sub = work / "in" / f"d{i % 20:02}"
            sub.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(sub / f"{i:06}.png")
        listing = Listing([str(work / "in")], recursive=True, suffix="_x")
        plan = plan_outputs(listing, str(work / "out"), suffix="_x")
        planner = Planner(plan, listing)
        restore_rgb_warmup = stages.decode(
            next(iter(sorted((work / "in").rglob("*.png")))), "w", plan.format, None
        )
        stages.restore(restorer, restore_rgb_warmup)  # first call: allocations, not per image
        jobs = iter(listing)
        while True:
            t0 = time.perf_counter()
            job = next(jobs, None)
            if job is None:
                break
            verdict = planner.screen(job, sniff=False)
            t1 = time.perf_counter()
            assert isinstance(verdict, Screened) and isinstance(verdict.target, Path)
            assert isinstance(job.source, Path)
            item = stages.decode(job.source, job.label, plan.format, None)
            t2 = time.perf_counter()
            done = stages.restore(restorer, item)
            t3 = time.perf_counter()
            sink = stages.sink_for(verdict.target, overwrite=False, make_folder=True)
            written = stages.write(done, sink, 95)
            t4 = time.perf_counter()
            json.dumps(stages.record(job, verdict.target, written).to_json())
            t5 = time.perf_counter()
            for name, (a, b) in zip(
                times, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)), strict=True
            ):
                times[name].append(b - a)
    report = {
        "host": host_info(),
        "measured_at": measured_at(),
        "count": ns.count,
        "median_ms": {k: round(statistics.median(v) * 1e3, 3) for k, v in times.items()},
        "mean_ms": {k: round(statistics.fmean(v) * 1e3, 3) for k, v in times.items()},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
