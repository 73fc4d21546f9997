"""`mprnet serve` under load, against the batch runner on the same images.

Why: the service keeps one network per task and feeds it from a queue; concurrent clients
should get the batch's throughput (target >= 0.9x: the only extra work is HTTP and the
copies of each upload), with no errors but 429 and a flat memory footprint.

For each model (`tiny`: the test suite's checkpoint; `bundled`: the derain weights that
ship with mprnet) it starts `mprnet serve` on 127.0.0.1 and, in this process, a `Restorer`
with the same settings. Rounds alternate which goes first:
* batch: `run_batch` (the runner of `mprnet derain DIR -o OUT`: decode ahead, restore,
  encode and write behind) over `--images` PNGs of `--size`^2 pixels, network preloaded;
* serve: `--clients` threads POST the same images (each once per round), raw bodies.
Throughput is images per second of wall time; the ratio serve/batch is per round (one run,
interleaved, because the machine is shared), and its median is reported. Latencies (p50,
p99) and status counts come from every served request. Then `--rss-requests` more
requests (small `--rss-size` images, so the count is affordable on 2 cores) measure the
server's resident memory before and after.

Run: python3 benchmarks/bench_serve.py --models tiny,bundled --images 16 --clients 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mprnet_cli.api import Restorer
from mprnet_cli.choices import BackendChoice, ModelChoice, Precision
from mprnet_cli.imageio import read_image
from mprnet_cli.jobs import Status, expand_inputs, plan_outputs
from mprnet_cli.runners.local import run_batch
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "data" / "reference" / "tiny_checkpoint.pth"


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        phase = rng.random(3) * 6.28
        base = np.stack([0.5 + 0.4 * np.sin(6 * xx + 4 * yy + p) for p in phase], axis=2)
        noisy = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        Image.fromarray((noisy * 255).round().astype(np.uint8)).save(folder / f"{i:03}.png")
    return [p.read_bytes() for p in sorted(folder.glob("*.png"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, body: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/derain", body=body)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - start
    except OSError:
        return -1, time.perf_counter() - start
    finally:
        conn.close()


def fire(port: int, bodies: list[bytes], clients: int) -> tuple[float, list[tuple[int, float]]]:
    """POST every body once from `clients` threads; (wall seconds, [(status, latency)])."""
    todo = list(enumerate(bodies))
    lock = threading.Lock()
    out: list[tuple[int, float]] = []

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                _, body = todo.pop()
            result = post(port, body)
            with lock:
                out.append(result)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def start_server(model: str, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    weights = ["-w", f"derain={TINY}"] if model == "tiny" else ["--model", "bundled"]
    cmd = [sys.executable, "-m", "mprnet_cli", "serve", "--port", str(port), "--task", "derain"]
    cmd += [*weights, "--device", "cpu", "--backend", args.backend, "--precision", args.precision]
    cmd += ["--threads", str(args.threads), "--queue", str(2 * args.clients), "-q"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"mprnet serve exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("mprnet serve did not become ready")


def bench(model: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    src = work / "in"
    bodies = [p.read_bytes() for p in sorted(src.glob("*.png"))]
    settings = RestoreSettings(
        weights=TINY if model == "tiny" else None,
        model=ModelChoice.AUTO if model == "tiny" else ModelChoice.BUNDLED,
        device="cpu",
        backend=BackendChoice(args.backend),
        precision=Precision(args.precision),
        threads=args.threads,
    )
    restorer = Restorer(Task.DERAIN, settings=settings, quiet=True)
    restorer.restore_rgb(read_image(next(src.glob("*.png"))).rgb)  # warm-up, not timed
    port = free_port()
    proc = start_server(model, port, args)
    try:
        fire(port, bodies[:1], 1)  # the server's first call: warm-up, not timed
        exp = expand_inputs([str(src)], suffix="_derained")
        plan = plan_outputs(exp, str(work / f"out-{model}"), suffix="_derained")
        batch_s: list[float] = []
        serve_s: list[float] = []
        ratios: list[float] = []
        answers: list[tuple[int, float]] = []
        for r in range(args.rounds):
            order = ["batch", "serve"] if r % 2 == 0 else ["serve", "batch"]
            for mode in order:
                if mode == "batch":
                    start = time.perf_counter()
                    results = list(run_batch(exp.jobs, restorer, plan, overwrite=True))
                    batch_s.append(time.perf_counter() - start)
                    assert all(x.status is Status.OK for x in results)
                else:
                    wall, got = fire(port, bodies, args.clients)
                    serve_s.append(wall)
                    answers += got
            ratios.append(batch_s[-1] / serve_s[-1])  # throughput serve / batch
        small = make_images(work / "small", 8, args.rss_size, seed=1)
        rss_before = rss_bytes(proc.pid)
        wall, got = fire(
            port, (small * (args.rss_requests // len(small) + 1))[: args.rss_requests], args.clients
        )
        rss_after = rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    latencies = sorted(t for status, t in answers if status == 200)
    codes = Counter(status for status, _ in answers)
    rss_codes = Counter(status for status, _ in got)
    n = len(bodies)
    return {
        "model": model,
        "images": n,
        "size": args.size,
        "clients": args.clients,
        "threads": args.threads,
        "backend": args.backend,
        "precision": args.precision,
        "rounds": args.rounds,
        "batch_images_per_s": [n / s for s in batch_s],
        "serve_images_per_s": [n / s for s in serve_s],
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "p50_s": latencies[len(latencies) // 2] if latencies else None,
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        if latencies
        else None,
        "status_counts": dict(codes),
        "rss_requests": args.rss_requests,
        "rss_size": args.rss_size,
        "rss_status_counts": dict(rss_codes),
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_requests_per_s": args.rss_requests / wall,
        "load_average_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,bundled", help="comma list of tiny, bundled")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rss-requests", type=int, default=1000)
    parser.add_argument("--rss-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        make_images(work / "in", args.images, args.size)
        for model in args.models.split(","):
            row = bench(model.strip(), args, work)
            rows.append(row)
            print(
                f"{row['model']:>7}: {row['images']} x {row['size']}px, {row['clients']} clients, "
                f"{row['threads']} threads: batch "
                f"{statistics.median(row['batch_images_per_s']):.2f} img/s, serve "
                f"{statistics.median(row['serve_images_per_s']):.2f} img/s, serve/batch "
                f"x{row['ratio_median']:.2f} (rounds {', '.join(f'{x:.2f}' for x in row['ratio_per_round'])}); "
                f"p50 {row['p50_s']:.2f} s, p99 {row['p99_s']:.2f} s; statuses {row['status_counts']}; "
                f"RSS {row['rss_before_mb']:.0f} -> {row['rss_after_mb']:.0f} MB over "
                f"{row['rss_requests']} requests of {row['rss_size']}px "
                f"(statuses {row['rss_status_counts']}, {row['rss_requests_per_s']:.1f} req/s); "
                f"load average {row['load_average_1min']:.1f}",
                flush=True,
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
