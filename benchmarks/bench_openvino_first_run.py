"""OpenVINO's first run, its end-to-end speed against PyTorch bf16, and its memory per pixel.

Why (issue 23, parts 1 and 2): the first run with new weights converted the network
before restoring anything (20-25 s), OpenVINO's tiles were sized with PyTorch's
bytes-per-pixel figures, and `--backend auto` picked OpenVINO even where PyTorch was as
fast end to end. This measures, per network (random weights, seed 0):

* `convert`: seconds to export + convert + save (what a first run would wait for);
* `e2e`: one fresh process per (backend, image size): build the network, create the
  backend (OpenVINO: read + compile from the cache), restore one image with automatic
  tiles exactly as a restore run does; seconds from process start of the backend to
  the restored image, and peak RSS above the loaded network;
* `mem`: one fresh process per (backend, precision, side): a single pass (tile 0) on a
  side x side image; peak RSS above the baseline before the pass. The slope between two
  sides is the bytes per pixel that `auto_tile` needs.

Rounds are interleaved (torch, openvino, torch, ...) so load changes hit both alike; the
machine is shared, so compare ratios within one run, not absolute seconds.

Run: python3 benchmarks/bench_openvino_first_run.py --json benchmarks/results/openvino_first_run.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from measure_memory import CONFIGS as _MEASURED  # same names and widths

CONFIGS = {k: _MEASURED[k] for k in ("derain", "denoise", "deblur", "compact-32", "compact-24")}


def _model(name: str) -> Any:
    import torch

    from mprnet_cli.model.config import MPRNetConfig
    from mprnet_cli.model.network import MPRNet

    torch.manual_seed(0)
    return MPRNet(MPRNetConfig(**CONFIGS[name])).eval()


def _child(args: list[str]) -> dict[str, Any]:
    """Run one measurement in this (fresh) process."""
    import numpy as np
    import torch

    from mprnet_cli.backends import BackendSpec, create
    from mprnet_cli.backends.bench import peak_rss_bytes, reset_peak
    from mprnet_cli.choices import BackendChoice, Precision
    from mprnet_cli.inference.pipeline import TileOptions, estimate_bytes_per_pixel, restore_array

    kind, name = args[0], args[1]
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = _model(name)
    if kind == "convert":
        from mprnet_cli.backends import openvino as ovb

        t = time.perf_counter()
        ovb.load_or_export(model)
        return {"seconds": time.perf_counter() - t}
    backend, precision = BackendChoice(args[2]), Precision(args[3])
    h, w = int(args[4]), int(args[5])
    rgb = np.random.default_rng(1).random((h, w, 3), dtype=np.float32)
    config = model.config

    def memory(device: str, p: Precision) -> float:
        return estimate_bytes_per_pixel(config, p, device)

    reset_peak()
    base = peak_rss_bytes()
    t = time.perf_counter()
    engine = create(backend, BackendSpec(model, torch.device("cpu"), precision, memory=memory))
    setup = time.perf_counter() - t
    if kind == "mem":
        reset_peak()
        base = peak_rss_bytes()
    t = time.perf_counter()
    options = TileOptions(tile=0) if kind == "mem" else TileOptions()
    _, stats = restore_array(engine, rgb, options)
    run = time.perf_counter() - t
    return {
        "setup_seconds": setup,
        "run_seconds": run,
        "seconds": setup + run,
        "peak_bytes": peak_rss_bytes() - base,
        "tiles": stats.tiles,
        "backend": engine.name,
    }


def _spawn(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--networks", default=",".join(CONFIGS))
    parser.add_argument("--e2e-sizes", default="1536x1024")
    parser.add_argument("--mem-sides", default="256,512")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", type=Path, help="reuse this cache (conversions kept)")
    parser.add_argument("--backends", default="openvino,torch")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: mem,e2e")
    ns = parser.parse_args()
    if ns.child:
        print(json.dumps(_child(ns.child)))
        return
    repo = Path(__file__).resolve().parent.parent
    cache = ns.cache or Path(tempfile.mkdtemp(prefix="mprnet-bench-ov-"))
    env = {**os.environ, "MPRNET_CACHE": str(cache), "PYTHONPATH": str(repo)}
    out: dict[str, Any] = {"measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "networks": {}}

    def save() -> None:
        if ns.json:
            ns.json.parent.mkdir(parents=True, exist_ok=True)
            ns.json.write_text(json.dumps(out, indent=1))

    for name in ns.networks.split(","):
        entry: dict[str, Any] = {"config": CONFIGS[name]}
        out["networks"][name] = entry
        entry["convert"] = _spawn(["convert", name], env)
        print(name, "convert", entry["convert"], flush=True)
        save()
        entry["mem"] = {}
        for precision in [] if "mem" in ns.skip else ns.precisions.split(","):
            for backend in ns.backends.split(","):
                points = []
                for side in (int(s) for s in ns.mem_sides.split(",")):
                    r = _spawn(["mem", name, backend, precision, str(side), str(side)], env)
                    points.append({"side": side, **r})
                ok = [p for p in points if "peak_bytes" in p]
                if len(ok) >= 2:
                    a, b = ok[0], ok[-1]
                    slope = (b["peak_bytes"] - a["peak_bytes"]) / (b["side"] ** 2 - a["side"] ** 2)
                    whole = b["peak_bytes"] / b["side"] ** 2
                else:
                    slope = whole = float("nan")
                entry["mem"][f"{backend}_{precision}"] = {
                    "points": points,
                    "bytes_per_pixel_slope": round(slope, 1),
                    "bytes_per_pixel_at_largest": round(whole, 1),
                }
                print(name, backend, precision, entry["mem"][f"{backend}_{precision}"], flush=True)
                save()
        entry["e2e"] = []
        for size in [] if "e2e" in ns.skip else ns.e2e_sizes.split(","):
            w, h = size.split("x")
            for _ in range(ns.rounds):
                for backend in ("torch", "openvino"):
                    r = _spawn(["e2e", name, backend, "bf16", h, w], env)
                    entry["e2e"].append({"size": size, "backend": backend, **r})
                    print(name, size, backend, r, flush=True)
                    save()
    save()


if __name__ == "__main__":
    main()
