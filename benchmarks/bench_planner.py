"""How long the driver plans before the first job can start, and its memory per input.

Why: the planner (`mprnet_cli.jobs`) lists every input and screens each output before a
runner starts (it is not streaming yet): for a folder of N inputs the first record waits
for the whole listing. This measures, on N empty files named like images in a tmpfs
(`/dev/shm`, so the disk is not what is measured), the listing (`expand_inputs`), the
screening (`Planner.screen`, by name as the Ray driver does and by magic bytes as the
local one does) and the Python memory held per input (tracemalloc).

Run: python3 benchmarks/bench_planner.py --count 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchlib import host_info, measured_at

from mprnet_cli.jobs import Planner, expand_inputs, plan_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--root", type=Path, default=Path("/dev/shm"))
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mprnet-plan-", dir=ns.root))
    try:
        for i in range(ns.count):
            sub = work / "in" / f"d{i % 20:02}"
            if i < 20:
                sub.mkdir(parents=True)
            (sub / f"{i:07}.png").touch()
        start = time.perf_counter()
        exp = expand_inputs([str(work / "in")], recursive=True, suffix="_x")
        listed = time.perf_counter() - start
        plan = plan_outputs(exp, str(work / "out"), suffix="_x")
        timings = {}
        for sniff in (False, True):
            planner = Planner(plan, exp.jobs)
            start = time.perf_counter()
            first = None
            for job in exp.jobs:
                planner.screen(job, sniff=sniff)
                first = first or time.perf_counter() - start
            timings["by_name" if not sniff else "by_magic_bytes"] = {
                "first_job_s": first,
                "all_s": time.perf_counter() - start,
            }
        del exp, planner
        # Memory apart (tracemalloc slows what it traces): the listing, then one screening.
        tracemalloc.start()
        exp = expand_inputs([str(work / "in")], recursive=True, suffix="_x")
        listing_bytes = tracemalloc.get_traced_memory()[0]
        planner = Planner(plan, exp.jobs)
        for job in exp.jobs:
            planner.screen(job, sniff=False)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        report = {
            "host": host_info(),
            "measured_at": measured_at(),
            "count": ns.count,
            "listing_s": listed,
            "listing_bytes_per_input": listing_bytes / ns.count,
            "screen": timings,
            "bytes_per_input_after_screening": held / ns.count,
            "first_job_after_s": listed + timings["by_name"]["first_job_s"],
        }
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
