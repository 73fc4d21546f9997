"""First and second run of a restore command, this checkout against another (the previous
default), each run a fresh process with its own new cache: wall time and peak RSS.

Why (issue 23, "Done when"): the first run with new weights used to wait for the
OpenVINO conversion; this shows what a new user gets now, in one interleaved run.
A run that leaves a background conversion (this checkout's `--backend auto`) is
followed by a wait for it (not timed) before the second run, which shows the speed
later runs get. Runs alternate between the checkouts, so load changes hit both.

Run: python3 benchmarks/bench_first_run.py --other /path/to/main --json out.json
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


def _weights(folder: Path, n_feat: int, scale_u: int, scale_o: int) -> Path:
    """A random checkpoint at a published width (what a user's own `--weights` file is)."""
    code = (
        "import sys, torch\n"
        "from safetensors.torch import save_file\n"
        "from mprnet_cli.model import MPRNet, MPRNetConfig\n"
        "from mprnet_cli.model.checkpoint import state_dict_for_saving\n"
        "torch.manual_seed(0)\n"
        f"m = MPRNet(MPRNetConfig(n_feat={n_feat}, scale_unetfeats={scale_u}, "
        f"scale_orsnetfeats={scale_o}))\n"
        "save_file(state_dict_for_saving(m), sys.argv[1])\n"
    )
    path = folder / f"custom-{n_feat}.safetensors"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def _run(checkout: Path, args: list[str], cache: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "MPRNET_CACHE": str(cache), "PYTHONPATH": str(checkout)}
    for name in ("MPRNET_BACKEND", "MPRNET_PRECISION"):
        env.pop(name, None)
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "mprnet_cli", *args]
    t = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "-o", str(out), "--overwrite", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cache.parent,  # not a checkout: `python -m` would import the one in the cwd
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - t
    last = proc.stderr.strip().splitlines()[-1].split()
    record = json.loads(proc.stdout.splitlines()[-1]) if proc.stdout.strip() else {}
    return {
        "seconds": round(wall, 2),
        "peak_rss_bytes": int(last[1]) * 1024 if len(last) == 2 else None,
        "backend": record.get("backend"),
        "exit": proc.returncode,
        "notes": [line for line in proc.stderr.splitlines()[:-1] if line.strip()][:4],
    }


def _wait_for_background(cache: Path, limit: float = 600) -> float:
    """Seconds until no background conversion job is left in `cache` (not timed above)."""
    t = time.perf_counter()
    folder = cache / "openvino"
    while time.perf_counter() - t < limit:
        if not folder.is_dir() or not any(
            p.name.startswith(".converting-") for p in folder.iterdir()
        ):
            break
        time.sleep(2)
    return round(time.perf_counter() - t, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="the previous checkout")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cases", default="bundled,custom")
    ns = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="mprnet-first-run-"))
    image = here / "samples" / "bythewater-rain.png"
    cases = {
        "bundled": ["derain", str(image)],
        "custom": ["derain", str(image), "-w", str(_weights(work, 40, 20, 16))],
    }
    results: list[dict[str, Any]] = []
    for case in ns.cases.split(","):
        for name, checkout in (("previous", ns.other), ("this", here)):
            cache = work / f"cache-{case}-{name}"
            out = work / f"out-{case}-{name}.png"
            first = _run(checkout, cases[case], cache, out)
            waited = _wait_for_background(cache)
            second = _run(checkout, cases[case], cache, out)
            row = {"case": case, "checkout": name, "first": first, "second": second}
            row["background_wait_seconds"] = waited
            results.append(row)
            print(json.dumps(row), flush=True)
            if ns.json:
                ns.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
