"""Many small images, both engines, as a user runs them: issue 18's targets.

Why: per-image overhead (planning, task scheduling, pickling, progress) decides how fast a
folder of thousands of small images goes, not the network. This runs the real CLI in a
subprocess, `mprnet denoise in -r -o out --weights tiny --device cpu --json -q`, on a
tree of N tiny PNGs in 20 subfolders, with `--engine local` and `--engine ray --workers 1`
in alternating rounds (ratios within one run; the machine is shared, so absolute times
are noisy), and reports for each: the time to the first JSON record, the total, and the
driver's peak RSS (VmHWM of the CLI process itself, not Ray's workers).

`--photos` also times how long after each output file's write its JSON record arrives,
on three 1600x1000 photos (the file's mtime against the record's arrival).

`--s3 N` also runs `--engine ray --workers 1 --format same` on N tiny PNGs in a local S3
stand-in (moto on 127.0.0.1; `pip install moto[server] boto3`), and counts the store
requests the driver process makes, by the `StorePath` method that made them (its
workers' requests, in other processes, are not counted): planning must not read each
object on the driver.

Run: python3 benchmarks/bench_many_images.py --count 2000 --rounds 2 --photos
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import host_info, measured_at
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "reference" / "tiny_checkpoint.pth"
#: Runs the CLI and prints the process's peak RSS on stderr as it exits.
DRIVER = (
    "import atexit, sys\n"
    "def hwm():\n"
    "    status = open('/proc/self/status').read()\n"
    "    sys.stderr.write('VmHWM ' + status.split('VmHWM:')[1].split()[0] + '\\n')\n"
    "atexit.register(hwm)\n"
    "sys.argv[0] = 'mprnet'\n"
    "from mprnet_cli.cli import main\n"
    "main()\n"
)
#: As DRIVER, and counts the object-store requests of this process (every one goes through
#: `StorePath._where`), printed on stderr by the method that made them.
COUNTING_DRIVER = (
    "import atexit, collections, json, sys\n"
    "from mprnet_cli.imageio.locations import StorePath\n"
    "calls = collections.Counter()\n"
    "where = StorePath._where\n"
    "def counted(self):\n"
    "    calls[sys._getframe(1).f_code.co_name] += 1\n"
    "    return where(self)\n"
    "StorePath._where = counted\n"
    "atexit.register(lambda: sys.stderr.write('STORE ' + json.dumps(calls) + '\\n'))\n" + DRIVER
)


def make_tree(folder: Path, count: int, size: int = 16) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / f"d{i % 20:02}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            sub / f"{i:06}.png"
        )


def run_cli(
    args: list[str], cwd: Path, extra_env: dict[str, str] | None = None, driver: str = DRIVER
) -> dict[str, Any]:
    """Run the CLI; the arrival time of each JSON line, the total and the peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPRNET_BACKEND": "torch", **(extra_env or {})}
    start, wall = time.perf_counter(), time.time()
    proc = subprocess.Popen(
        [sys.executable, "-c", driver, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    arrivals: list[tuple[float, dict[str, Any]]] = []
    for line in proc.stdout:
        arrivals.append((time.time(), json.loads(line)))
    err = proc.stderr.read()
    code = proc.wait()
    total = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"exit {code}: {err[-2000:]}")
    first = arrivals[0][0] - wall if arrivals else None
    last = arrivals[-1][0] - wall if arrivals else None
    hwm = re.search(r"VmHWM (\d+)", err)
    store = re.search(r"STORE (.*)", err)
    steady = None
    if first is not None and last is not None and last > first:
        steady = (len(arrivals) - 1) / (last - first)
    return {
        "records": len(arrivals),
        "first_record_s": first,
        "last_record_s": last,
        "images_per_s_after_first": steady,
        "total_s": total,
        "driver_peak_rss_mb": int(hwm.group(1)) / 1024 if hwm else None,
        "driver_store_requests": json.loads(store.group(1)) if store else None,
        "arrivals": arrivals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--photos", action="store_true")
    parser.add_argument("--s3", type=int, default=0, help="objects in the S3 run (0: none)")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--out", type=Path, default=None)
    ns = parser.parse_args()
    common = ["--weights", str(TINY), "--device", "cpu", "--json", "-q", "--threads", "1"]
    engines = {
        "local": ["--engine", "local"],
        "ray": ["--engine", "ray", "--workers", "1"],
    }
    chosen = ns.engines.split(",")
    report: dict[str, Any] = {
        "host": host_info(),
        "measured_at": measured_at(),
        "count": ns.count,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="mprnet-many-") as tmp:
        work = Path(tmp)
        make_tree(work / "in", ns.count)
        for rnd in range(ns.rounds):
            for engine in chosen:
                shutil.rmtree(work / "out", ignore_errors=True)
                args = ["denoise", "in", "-r", "-o", "out", *common, *engines[engine]]
                got = run_cli(args, work)
                assert got["records"] == ns.count, got["records"]
                got.pop("arrivals")
                got.update(engine=engine, round=rnd)
                report["runs"].append(got)
                print(json.dumps(got), flush=True)
        if ns.photos:
            rng = np.random.default_rng(1)
            (work / "photos").mkdir()
            yy, xx = np.mgrid[0:1000, 0:1600].astype(np.float32) / 1600
            for i in range(3):
                base = np.stack([0.5 + 0.4 * np.sin(9 * xx + 5 * yy + p + i) for p in (0, 2, 4)], 2)
                noisy = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
                pixels = (noisy * 255).round().astype(np.uint8)
                Image.fromarray(pixels).save(work / "photos" / f"p{i}.png")
            for engine in chosen:
                shutil.rmtree(work / "pout", ignore_errors=True)
                args = ["denoise", "photos", "-o", "pout", *common, *engines[engine]]
                got = run_cli(args, work)
                photo = {
                    "engine": engine,
                    "photos": 3,
                    "record_lag_s": [round(x, 3) for x in lags_in(got["arrivals"], work)],
                    "total_s": got["total_s"],
                }
                report["runs"].append(photo)
                print(json.dumps(photo), flush=True)
        if ns.s3:
            s3_run = run_s3(work, ns.s3, common)
            report["runs"].append(s3_run)
            print(json.dumps(s3_run), flush=True)
    ratios = {}
    by = {
        e: [r["total_s"] for r in report["runs"] if r["engine"] == e and "photos" not in r]
        for e in chosen
    }
    if "local" in by and "ray" in by and by["local"] and by["ray"]:
        ratios["ray_throughput_vs_local"] = min(by["local"]) / min(by["ray"])
    report["ratios"] = ratios
    print(json.dumps(ratios))
    if ns.out is not None:
        ns.out.write_text(json.dumps(report, indent=1) + "\n")


def run_s3(work: Path, count: int, common: list[str]) -> dict[str, Any]:
    """`count` tiny PNGs in a moto bucket, restored bucket to bucket with --format same."""
    import io

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
        os.environ.update(env)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="photos")
        rng = np.random.default_rng(2)
        upload = time.perf_counter()
        for i in range(count):
            buf = io.BytesIO()
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buf, "PNG")
            s3.put_object(Bucket="photos", Key=f"in/d{i % 20:02}/{i:06}.png", Body=buf.getvalue())
        uploaded = time.perf_counter() - upload
        args = ["denoise", "s3://photos/in", "-r", "-o", "s3://photos/out", "--format", "same"]
        got = run_cli(
            [*args, *common, "--engine", "ray", "--workers", "1"], work, env, COUNTING_DRIVER
        )
        assert got["records"] == count, got["records"]
        got.pop("arrivals")
        written = sum(
            page.get("KeyCount", 0)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="photos", Prefix="out/")
        )
        got.update(engine="ray-s3", objects=count, outputs_in_bucket=written, upload_s=uploaded)
        return got
    finally:
        server.stop()


def lags_in(arrivals: list[tuple[float, dict[str, Any]]], cwd: Path) -> list[float]:
    """Seconds from each output's last write (its mtime) to its record's arrival."""
    return [t - (cwd / rec["output"]).stat().st_mtime for t, rec in arrivals]


if __name__ == "__main__":
    main()
