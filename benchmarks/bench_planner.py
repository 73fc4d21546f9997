"""How long the driver plans before the first job can start, and its memory per input.

Why: a run's first record should not wait for the whole listing, and the driver's memory
should not grow with the number of inputs (issue 18: the first job of 200,000 inputs in
under 2 s, under 100 bytes per pending input). This makes N empty files named like
images in a tmpfs (`/dev/shm`, so the disk is not what is measured), in 20 folders, and
measures, in one run with interleaved rounds:

* streamed: `Listing` + `Planner.screen` job by job (what both runners do): the time to
  the first screened job, to the last, and the Python memory (tracemalloc, a separate
  pass since tracing slows what it traces) at its peak and left at the end, per input;
* whole: `expand_inputs` (the same rules, listed into a list, as every run did before)
  then screening: the same times and memory.

Screening is by name (`sniff=False`, the Ray driver) and by magic bytes (the local
engine's look-ahead, which reads each file's first bytes: empty files here).

Run: python3 benchmarks/bench_planner.py --count 200000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchlib import host_info, measured_at

from mprnet_cli.jobs import Job, Listing, Planner, expand_inputs, plan_outputs

SUFFIX = "_x"


def _inputs(work: Path, streamed: bool) -> tuple[Iterable[Job], Planner]:
    args = [str(work / "in")]
    out = str(work / "out")
    if streamed:
        listing = Listing(args, recursive=True, suffix=SUFFIX, exclude=Path(out))
        return listing, Planner(plan_outputs(listing, out, suffix=SUFFIX), listing)
    exp = expand_inputs(args, recursive=True, suffix=SUFFIX, exclude=Path(out))
    return exp.jobs, Planner(plan_outputs(exp, out, suffix=SUFFIX), exp.jobs)


def _timed(work: Path, streamed: bool, sniff: bool) -> dict[str, float]:
    start = time.perf_counter()
    jobs, planner = _inputs(work, streamed)
    first = 0.0
    for job in jobs:
        planner.screen(job, sniff=sniff)
        first = first or time.perf_counter() - start
    return {"first_job_s": first, "all_s": time.perf_counter() - start}


def _memory(work: Path, streamed: bool, count: int) -> dict[str, float]:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        jobs, planner = _inputs(work, streamed)
        for job in jobs:
            planner.screen(job, sniff=False)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "peak_bytes_per_input": (peak - before) / count,
        "kept_bytes_per_input": (after - before) / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/dev/shm"))
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mprnet-plan-", dir=ns.root))
    try:
        for d in range(20):
            (work / "in" / f"d{d:02}").mkdir(parents=True)
        for i in range(ns.count):
            (work / "in" / f"d{i % 20:02}" / f"{i:07}.png").touch()
        runs: dict[str, list[dict[str, float]]] = {}
        for _ in range(ns.rounds):  # interleaved: the machine's load hits both alike
            for streamed in (True, False):
                for sniff in (False, True):
                    name = (
                        f"{'streamed' if streamed else 'whole'}_by_{'magic' if sniff else 'name'}"
                    )
                    runs.setdefault(name, []).append(_timed(work, streamed, sniff))
        best = {k: {m: min(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
        memory = {
            "streamed": _memory(work, True, ns.count),
            "whole": _memory(work, False, ns.count),
        }
        ratio: dict[str, Any] = {
            "first_job_whole_over_streamed": best["whole_by_name"]["first_job_s"]
            / best["streamed_by_name"]["first_job_s"],
            "all_whole_over_streamed": best["whole_by_name"]["all_s"]
            / best["streamed_by_name"]["all_s"],
        }
        report = {
            "host": host_info(),
            "measured_at": measured_at(),
            "count": ns.count,
            "rounds": ns.rounds,
            "best_of_rounds": best,
            "memory": memory,
            "ratios": ratio,
        }
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
