"""OpenVINO against PyTorch on one network: dynamic vs static shapes, fp32 vs bf16 hints,
and each output's distance from the PyTorch fp32 reference mode.

Why: `OpenVinoBackend` compiles a static-shape model for shapes that come back
(tiles) and runs first-seen shapes on the dynamic model; this measures what that
buys, and checks the exported graph's outputs (max |delta|, PSNR against the
reference mode) at a size other than the export example. Modes are timed in
interleaved rounds in one process; the first (cold) call of each is reported apart.

    python3 benchmarks/bench_openvino_shapes.py derain 256 3 \
        > benchmarks/results/openvino_shapes_derain256.jsonl
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from mprnet_cli.backends.openvino import OpenVinoBackend, export
from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.choices import Precision
from mprnet_cli.model.network import MPRNet
from mprnet_cli.weights import published_configs


def main() -> None:
    task, side, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    model = MPRNet(published_configs()[task]).eval()
    t = time.perf_counter()
    converted = export(model)
    print(json.dumps({"convert_seconds": round(time.perf_counter() - t, 1)}), flush=True)
    x = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    ref = MPRNet(published_configs()[task]).eval()
    ref.load_state_dict(model.state_dict())
    ref.batched = False
    cpu = torch.device("cpu")
    runners = {
        "reference": TorchBackend(ref, cpu, Precision.FP32, channels_last=False),
        "torch-fp32": TorchBackend(model, cpu, Precision.FP32),
        "torch-bf16": TorchBackend(model, cpu, Precision.BF16),
        "ov-dyn-fp32": OpenVinoBackend(converted, model, Precision.FP32, shapes="dynamic"),
        "ov-dyn-bf16": OpenVinoBackend(converted, model, Precision.BF16, shapes="dynamic"),
        "ov-static-fp32": OpenVinoBackend(converted, model, Precision.FP32, shapes="static"),
        "ov-static-bf16": OpenVinoBackend(converted, model, Precision.BF16, shapes="static"),
    }
    outs, first = {}, {}
    for name, run in runners.items():
        t = time.perf_counter()
        outs[name] = run(x)
        first[name] = time.perf_counter() - t
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - t)
    med = {name: float(np.median(v)) for name, v in times.items()}
    for name in runners:
        d = outs[name] - outs["reference"]
        mse = float(np.mean(d**2))
        row = {
            "task": task,
            "side": side,
            "mode": name,
            "threads": torch.get_num_threads(),
            "seconds": round(med[name], 3),
            "all_seconds": [round(v, 3) for v in times[name]],
            "first_call_seconds": round(first[name], 2),
            "speedup_vs_reference": round(med["reference"] / med[name], 2),
            "max_abs_diff_vs_reference": float(np.abs(d).max()),
            "psnr_vs_reference": round(10 * np.log10(1 / mse), 1) if mse else None,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
