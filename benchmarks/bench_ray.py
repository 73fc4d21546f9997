"""What `--engine ray` costs and moves per image, for the scaling model in docs/engines-and-ray.md.

Why: the Ray engine splits each image into a decode task, a network call in an actor and an
encode task, with object-store hops in between. On one machine that can only cost time;
this measures how much (images/s of both engines on the same folder, in one run, rounds
alternating), Ray's own start-up (reported apart: a cluster pays it once), the bytes each
image puts in the object store, and the one-core decode and encode cost of a 12-MP photo
(what sizes the CPU side of a cluster).

Engines run as the CLI runs them with default settings: local = `run_batch` with the
Restorer on all cores (decode/encode threads overlapped); ray = `restore_files` with the
actor pool `cluster_plan` picks for this machine. Weights: the bundled compact network of
`--task` (real weights, so the work per image is a real restore).

Run: python3 benchmarks/bench_ray.py --count 50 --size 128 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from bench_batch_io import make_images
from benchlib import host_info, measured_at
from PIL import Image

from mprnet_cli.api import Restorer
from mprnet_cli.choices import ModelChoice, OutputFormat
from mprnet_cli.imageio import encode_image, read_image
from mprnet_cli.jobs import Status, expand_inputs, plan_outputs
from mprnet_cli.runners import RaySettings, stages
from mprnet_cli.runners import ray as ray_runner
from mprnet_cli.runners.local import run_batch
from mprnet_cli.runners.ray import cluster as ray_cluster
from mprnet_cli.runners.ray import stages as ray_stages
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task
from mprnet_cli.weights import resolve

DEFAULT_TORCH_THREADS = torch.get_num_threads()


def run_local(folder: Path, out: Path, task: Task, threads: int | None) -> float:
    exp = expand_inputs([str(folder)], suffix="_r", exclude=out)
    plan = plan_outputs(exp, str(out), suffix="_r")
    torch.set_num_threads(threads or DEFAULT_TORCH_THREADS)
    start = time.perf_counter()
    results = list(
        run_batch(exp.jobs, lambda: Restorer(task, model=ModelChoice.BUNDLED, quiet=True), plan)
    )
    assert {r.status for r in results} == {Status.OK}, results
    return time.perf_counter() - start


def run_ray(folder: Path, out: Path, task: Task, threads: int | None) -> tuple[float, float]:
    """Wall time of the whole job, and from its first result to its last."""
    exp = expand_inputs([str(folder)], suffix="_r", exclude=out)
    plan = plan_outputs(exp, str(out), suffix="_r")
    start = time.perf_counter()
    first = None
    results = []
    for r in ray_runner.restore_files(
        exp.jobs,
        plan,
        weights=lambda: resolve(task, model=ModelChoice.BUNDLED, quiet=True),
        task=task,
        settings=RestoreSettings(threads=threads),
        cluster=RaySettings(),
    ):
        first = first or time.perf_counter()
        results.append(r)
    end = time.perf_counter()
    assert {r.status for r in results} == {Status.OK}, results
    assert first is not None
    return end - start, end - first


def payload_bytes(path: Path, task: Task) -> dict[str, int]:
    """Object-store bytes of one image: decode -> actor, actor -> encode, encode -> driver."""
    decoded = stages.decode(path, str(path), OutputFormat.SAME, None)
    restorer = Restorer(task, model=ModelChoice.BUNDLED, quiet=True)
    net = object.__new__(ray_cluster._Network)
    net.restorer = restorer
    restored = net._restore(decoded)
    written = stages.write(restored, lambda data: None, 95)
    return {
        "decoded": len(ray_stages._pack(decoded)),
        "restored": len(ray_stages._pack(restored)),
        "record": len(ray_stages._pack(written)),
    }


def photo_costs(work: Path, repeat: int) -> dict[str, Any]:
    """One-core decode and encode of a 4000x3000 JPEG (quality 95), medians of `repeat`."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    h, w = 3000, 4000
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / w
    base = np.stack([0.5 + 0.4 * np.sin(9 * xx + 5 * yy + p) for p in (0, 2, 4)], axis=2)
    pixels = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1)
    path = work / "photo12mp.jpg"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path, quality=95)
    decode, encode = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        decoded = read_image(path)
        decode.append(time.perf_counter() - t)
        t = time.perf_counter()
        data = encode_image(decoded.rgb, decoded.info, OutputFormat.JPEG)
        encode.append(time.perf_counter() - t)
    item = stages.decode(path, "photo", OutputFormat.SAME, None)
    restored_bytes = item.nbytes if isinstance(item, stages.Decoded) else 0  # integers back
    return {
        "photo_bytes": path.stat().st_size,
        "encoded_bytes": len(data),
        "decode_s": statistics.median(decode),
        "encode_s": statistics.median(encode),
        "decoded_payload_bytes": len(ray_stages._pack(item)),
        "restored_payload_bytes_approx": restored_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--task", default="derain")
    parser.add_argument("--photo-repeat", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both engines (default: each engine's own: local one per "
        "core, ray the actor's CPUs)",
    )
    args = parser.parse_args()
    task = Task(args.task)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        folder = work / "in"
        folder.mkdir()
        make_images(folder, args.count, args.size)
        t = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t
        cluster = ray_runner.cluster_plan(ray.cluster_resources(), RaySettings())
        local_s: list[float] = []
        ray_s: list[float] = []
        ray_steady: list[float] = []
        for i in range(args.rounds):
            order = ("local", "ray") if i % 2 == 0 else ("ray", "local")
            for engine in order:
                out = work / f"out-{engine}-{i}"
                if engine == "local":
                    local_s.append(run_local(folder, out, task, args.threads))
                else:
                    whole, steady = run_ray(folder, out, task, args.threads)
                    ray_s.append(whole)
                    ray_steady.append(steady)
                shutil.rmtree(out)
        local_rate = args.count / statistics.median(local_s)
        ray_rate = args.count / statistics.median(ray_s)
        row = {
            "measured": measured_at(),
            "host": host_info(),
            "task": task.value,
            "images": args.count,
            "size": args.size,
            "rounds": args.rounds,
            "threads": args.threads,
            "ray_init_s": round(startup, 2),
            "ray_pool": {
                "workers": cluster.workers,
                "cpus_per_worker": cluster.cpus_per_worker,
                "gpus_per_worker": cluster.gpus_per_worker,
            },
            "local_s": [round(s, 2) for s in local_s],
            "ray_s": [round(s, 2) for s in ray_s],
            "ray_first_to_last_s": [round(s, 2) for s in ray_steady],
            "local_images_per_s": round(local_rate, 2),
            "ray_images_per_s": round(ray_rate, 2),
            "ray_over_local": round(ray_rate / local_rate, 3),
            "object_store_bytes_per_image": payload_bytes(next(folder.iterdir()), task),
            "photo_12mp_one_core": photo_costs(work, args.photo_repeat),
        }
        print(json.dumps(row))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
