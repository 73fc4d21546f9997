"""Threads under load: how long a small image takes with each thread policy while other
processes keep some cores busy.

Why: torch's default (one thread per physical core) makes every parallel region wait
for the thread that the scheduler queued behind another process; `device.default_threads`
counts the other runnable threads instead. Each round runs every policy once
(interleaved), under 0..N busy-loop processes started by this script; medians and
ratios come from one run. The machine's own background load is recorded too.

    python3 benchmarks/bench_threads.py --side 64 --rounds 5 \
        --json benchmarks/results/threads_under_load.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from benchlib import host_info, measured_at

from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.choices import Precision
from mprnet_cli.host.device import default_threads
from mprnet_cli.model import MPRNet
from mprnet_cli.weights import published_configs

BUSY = "while True: pass"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="derain")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-busy", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cores = torch.get_num_threads()
    torch.manual_seed(0)
    backend = TorchBackend(
        MPRNet(published_configs()[args.task]), torch.device("cpu"), Precision.FP32
    )
    x = torch.rand(1, 3, args.side, args.side)
    backend(x)  # warm-up
    rows = []
    for busy in range(args.max_busy + 1):
        hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
        try:
            time.sleep(1.0)  # let the scheduler settle
            picked = default_threads(cores)
            policies = {"one_per_core": cores, "one": 1, "default": picked}
            times: dict[str, list[float]] = {name: [] for name in policies}
            for _ in range(args.rounds):
                for name, threads in policies.items():
                    torch.set_num_threads(threads)
                    t = time.perf_counter()
                    backend(x)
                    times[name].append(time.perf_counter() - t)
            base = statistics.median(times["one_per_core"])
            for name, threads in policies.items():
                med = statistics.median(times[name])
                row = {
                    "task": args.task,
                    "side": args.side,
                    "busy_processes": busy,
                    "policy": name,
                    "threads": threads,
                    "median_seconds": round(med, 4),
                    "max_seconds": round(max(times[name]), 4),
                    "speedup_vs_one_per_core": round(base / med, 2),
                    "loadavg": loadavg(),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    if args.json:
        meta = {"host": host_info(), "measured_at": measured_at()}
        with args.json.open("a") as f:
            for row in rows:
                f.write(json.dumps({**row, **meta}) + "\n")


if __name__ == "__main__":
    main()
