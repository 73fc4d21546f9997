"""How visible MPRNet's split lines are under `--split-lines keep|fix|hide` (issues 13, 21).

Why: MPRNet cuts its input at half height (stages 1 and 2) and half width (stage 1);
weights that do not hide the cuts leave lines at the image centre, and at every tile's
centre when tiled. The tiling benchmark scores tile *edges* only, so it missed them.

For each network and photo, a crop of --crop HxW (top-left) and the same crop moved
down by 8 rows are degraded with the network's task degradation (noise:15, rain,
blur:levin:1, fixed seeds; the moved crop is cut from the same degraded image) and
restored in one pass ("plain-1", `--split-lines keep`) and in tiles of --tile px with
--overlap ("plain-t"), and both again by the same weights on their input uncut
("fixed-1", "fixed-t": `--split-lines fix`, the default) and, with --methods,
`restore_hiding_split_lines` ("hidden-1", "hidden-t"). The network runs on the backend
`mprnet derain` picks here (--backend auto: PyTorch for the compact bundled networks,
OpenVINO for published widths once converted, bf16 where the CPU does bf16).
Metrics, all on outputs quantised to 8-bit levels (0-255 scale, float):

shift   D(r) = mean over columns and channels of |A(r) - B(r)|, for image rows r that
        both the crop A and the moved crop B cover. A line that belongs to the network
        (not to the photo) moves with the crop, so it shows in D at each run's own split
        rows. Reported: "line" = max of D over the rows next to each plain run's split
        boundaries (tile and image centres, both runs: the issue's 2.2-level figure),
        "max" = max of D over all rows, "median". Rows within 16 px of either crop's
        border are left out of line and max: there the two crops see different
        context over the convolutions' reach, which is no split line. Goal in the
        issue: line <= 0.6.
grad    g(X, r) = mean |X(r) - X(r-1)| (rows; columns likewise): the step across the
        boundary r. "tile/one" = g(tiled output)/g(plain one-pass output) at every tile
        centre boundary of the plain tiled plan (mean and max over them; goal <= 1.15,
        2.4-2.7 in the issue). "own" = g at the plain run's split boundaries over g
        4-8 px either side, mean over the boundaries (1.0 = no line; the same
        positions for the hidden runs), "pass" the same at the boundaries of all three
        hidden passes. Single photos carry structure of their own, so read these
        against the plain/hidden pair, not against 1.0 alone.
time    seconds of each restore (fixed or hidden / plain, same image, measured one after
        the other in this process). And --time-size WxH: the first --time-count photos
        resized to that size (bicubic; the test sets hold no 1-MP or 12-MP photos) and
        restored with the DEFAULT options (tile from free memory) as `keep` and `fix`,
        alternating (which goes first alternates too), --rounds times: "time_ratio" = sum(fix) / sum(keep) over all rounds
        (wall), "cpu_ratio" the same in this process's CPU seconds
        (the first round includes OpenVINO's first-shape costs; "time_ratio_warm" leaves
        it out).

Networks: the bundled weights of each task (`bundled-TASK`), and the published widths
with RANDOM weights (`random-TASK`, torch seed 0; run on --random-crop with
--random-tile, as they are 2-10x slower). Test photos are read from --images (default:
the shared Kodak24 set), never shipped.

Run: python3 benchmarks/bench_split_lines.py --json benchmarks/results/split_lines.json
     python3 benchmarks/bench_split_lines.py --networks bundled-derain --count 0 \
         --time-size 1224x816 --time-count 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import host_info, measured_at
from numpy.typing import NDArray
from PIL import Image
from safetensors.torch import save_file

from mprnet_cli import Restorer
from mprnet_cli.backends.base import Backend
from mprnet_cli.degradations.benchmark import parse_degradation
from mprnet_cli.evaluation.metrics import line_contrast, line_steps, shifted_difference
from mprnet_cli.imageio import read_image
from mprnet_cli.inference.pipeline import TileOptions, restore_array
from mprnet_cli.inference.splitlines import canvas_plan, pass_offsets, restore_hiding_split_lines
from mprnet_cli.inference.tiling import TilePlan, plan_tiles, round_up
from mprnet_cli.model import MPRNet
from mprnet_cli.model.checkpoint import state_dict_for_saving
from mprnet_cli.tasks import Task
from mprnet_cli.weights import published_configs

SCHEMA = 1
SHIFT = 8
DEGRADE = {Task.DENOISE: "noise:15", Task.DERAIN: "rain", Task.DEBLUR: "blur:levin:1"}
DEFAULT_IMAGES = Path("/work/shared/testdata/Kodak24/clean")
DEFAULT_KERNELS = Path("/work/shared/testdata/Levin09_kernels")
FloatImage = NDArray[np.float32]


# --------------------------------------------------------------------------- metrics


def levels(x: FloatImage) -> NDArray[np.float64]:
    """The output as saved: rounded to 8 bits, on the 0-255 scale."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.float64)


def centres(plan: TilePlan, axis: int) -> list[int]:
    """Tile centre boundaries of a plan along rows (0) or columns (1)."""
    return sorted({(t.y0 + t.height // 2) if axis == 0 else (t.x0 + t.width // 2) for t in plan})


def inside(positions: list[int], size: int, margin: int = 16) -> list[int]:
    """Positions at least `margin` from the borders (crop borders differ between A and B
    over the convolutions' reach, 8-16 px, and that is not a split line)."""
    return [p for p in positions if margin <= p <= size - margin]


# --------------------------------------------------------------------------- runs


RUNS = {
    "plain": restore_array,
    "fixed": restore_array,  # on the uncut network
    "hidden": restore_hiding_split_lines,
}
SPLIT_LINES = {"plain": "keep", "fixed": "fix", "hidden": "hide"}


def network(name: str, backend: str, scratch: Path, split_lines: str = "keep") -> Restorer:
    """The network as `mprnet --split-lines SPLIT_LINES` runs it (same backend choice,
    precision and tile sizing)."""
    kind, task_name = name.split("-", 1)
    task = Task(task_name)
    if kind == "bundled":
        return Restorer(task, model="bundled", backend=backend, quiet=True, split_lines=split_lines)
    torch.manual_seed(0)
    path = scratch / f"{name}.safetensors"
    config = published_configs()[task.value]
    save_file(
        state_dict_for_saving(MPRNet(config)),
        path,
        metadata={"format": "mprnet", "config": json.dumps(config.to_dict())},
    )
    return Restorer(task, weights=path, backend=backend, quiet=True, split_lines=split_lines)


def restore(
    engine: Backend, x: FloatImage, tile: int | None, overlap: int, method: str
) -> tuple[FloatImage, float]:
    options = TileOptions(tile=tile, overlap=overlap)
    t0 = time.perf_counter()
    out, _ = RUNS[method](engine, x, options)
    return out, time.perf_counter() - t0


def time_default(
    restorers: dict[str, Restorer], photos: list[Path], size: tuple[int, int], rounds: int
) -> dict[str, Any]:
    """keep vs fix with the default options on resized photos, alternating, in one run."""
    images = [
        np.asarray(
            Image.open(p).convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.float32
        )
        / 255.0
        for p in photos
    ]
    seconds: dict[str, list[float]] = {"plain": [], "fixed": []}
    cpu: dict[str, list[float]] = {"plain": [], "fixed": []}
    for k in range(rounds):
        order = ("plain", "fixed") if k % 2 == 0 else ("fixed", "plain")
        for x in images:
            for method in order:
                c0 = time.process_time()
                r = restorers[method]
                _, sec = restore(r.backend, x, None, r.options.overlap, method)
                cpu[method].append(time.process_time() - c0)
                seconds[method].append(sec)
                print(
                    f"  time round {k} {method:6s} {sec:.1f} s wall, {cpu[method][-1]:.1f} s CPU",
                    flush=True,
                )
    n = len(images)
    warm = {m: v[n:] for m, v in seconds.items()}
    return {
        "size": list(size),
        "photos": [p.name for p in photos],
        "rounds": rounds,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "time_ratio": sum(seconds["fixed"]) / sum(seconds["plain"]),
        # CPU time of this process (all its threads): less swayed by other users' load.
        "cpu_ratio": sum(cpu["fixed"]) / sum(cpu["plain"]),
        "time_ratio_warm": sum(warm["fixed"]) / sum(warm["plain"]) if rounds > 1 else None,
    }


def measure_one(
    engines: dict[str, Backend],
    degraded: FloatImage,
    crop: tuple[int, int],
    tile: int,
    overlap: int,
    methods: tuple[str, ...],
) -> dict[str, Any]:
    # Crops never exceed the degraded image (deblurring's 'valid' blur makes it smaller).
    h = min(crop[0], (degraded.shape[0] - SHIFT) // 8 * 8)
    w = min(crop[1], degraded.shape[1] // 8 * 8)
    a_in = np.ascontiguousarray(degraded[:h, :w])
    b_in = np.ascontiguousarray(degraded[SHIFT : SHIFT + h, :w])
    ph, pw = round_up(h, 8), round_up(w, 8)
    plans = {
        "1": plan_tiles(ph, pw, 0, 0),
        "t": plan_tiles(ph, pw, tile, max(0, min(overlap, tile - 8))),
    }
    outs: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    result: dict[str, Any] = {"crop": [h, w]}
    seconds: dict[str, float] = {}
    for method in methods:
        for mode, size in (("1", 0), ("t", tile)) if tile else (("1", 0),):
            key = f"{method}-{mode}"
            a, ta = restore(engines[method], a_in, size, overlap, method)
            b, tb = restore(engines[method], b_in, size, overlap, method)
            outs[key] = (levels(a), levels(b))
            seconds[key] = (ta + tb) / 2
    one = outs["plain-1"][0]
    for key, (a, b) in outs.items():
        mode = key[-1]
        plan = plans[mode]
        lines_a = inside(centres(plan, 0), h)
        lines = sorted({*lines_a, *(r + SHIFT for r in lines_a)})
        d = shifted_difference(a, b, SHIFT)
        line_rows = [r for b_ in lines for r in (b_ - 1, b_) if SHIFT + 16 <= r < h - 16]
        own_rows, own_cols = lines_a, inside(centres(plan, 1), w)
        hp = canvas_plan(h, w, plan.tile, overlap)
        pass_rows = inside(sorted({r - o for r in centres(hp, 0) for o in pass_offsets()}), h)
        pass_cols = inside(sorted({c - o for c in centres(hp, 1) for o in pass_offsets()}), w)
        entry: dict[str, Any] = {
            "shift_line": float(np.nanmax(d[line_rows])) if line_rows else None,
            "shift_max": float(np.nanmax(d[SHIFT + 16 : h - 16])),
            "shift_median": float(np.nanmedian(d)),
            "own_rows": line_contrast(line_steps(a, 0), own_rows),
            "own_cols": line_contrast(line_steps(a, 1), own_cols),
            "pass_rows": line_contrast(line_steps(a, 0), pass_rows),
            "pass_cols": line_contrast(line_steps(a, 1), pass_cols),
            "seconds": seconds[key],
            "seconds_vs_plain": seconds[key] / seconds[f"plain-{mode}"],
        }
        if mode == "t":
            for axis, name, size in ((0, "rows", h), (1, "cols", w)):
                pos = inside(centres(plans["t"], axis), size)
                ratio = line_steps(a, axis)[pos] / np.maximum(line_steps(one, axis)[pos], 1e-9)
                entry[f"tile_vs_one_{name}_mean"] = float(np.mean(ratio))
                entry[f"tile_vs_one_{name}_max"] = float(np.max(ratio))
        result[key] = entry
    if tile:
        result["tile_rows"] = inside(centres(plans["t"], 0), h)
    return result


def write_json(args: argparse.Namespace, records: list[dict[str, Any]]) -> None:
    record = {
        "schema": SCHEMA,
        "measured_at": measured_at(),
        "host": host_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": records,
    }
    args.json.write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--networks",
        default="bundled-denoise,bundled-derain,bundled-deblur,"
        "random-derain,random-denoise,random-deblur",
    )
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--count", type=int, default=3, help="photos per bundled network (first N)")
    p.add_argument("--crop", default="480x488", help="HxW of the bundled networks' crops")
    p.add_argument("--tile", type=int, default=256, help="0: one pass only")
    p.add_argument("--kernels", type=Path, default=DEFAULT_KERNELS, help="Levin09 kernels")
    p.add_argument("--random-crop", default="176x184")
    p.add_argument("--random-tile", type=int, default=128, help="0: one pass only")
    p.add_argument("--random-count", type=int, default=1)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--methods", default="plain,fixed", help="of plain,fixed,hidden")
    p.add_argument("--backend", default="auto", help="auto (as mprnet), torch or openvino")
    p.add_argument("--time-size", help="WxH: also time keep vs fix at this size (default tiles)")
    p.add_argument("--time-count", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="write all results here")
    args = p.parse_args(argv)
    methods = tuple(args.methods.split(","))
    scratch = Path(tempfile.mkdtemp(prefix="bench-split-"))

    photos = sorted(f for f in args.images.iterdir() if f.suffix.lower() == ".png")
    records = []
    for name in args.networks.split(","):
        task = Task(name.split("-", 1)[1])
        random = name.startswith("random")
        crop = tuple(int(v) for v in (args.random_crop if random else args.crop).split("x"))
        tile = args.random_tile if random else args.tile
        restorers = {
            m: network(name, args.backend, scratch, SPLIT_LINES[m])
            for m in {*methods, "plain", "fixed"}
        }
        engines = {m: r.backend for m, r in restorers.items()}
        engine = engines["plain"]
        print(f"{name}: {engine.name} {engine.precision.value} on {engine.device}", flush=True)
        degradation = parse_degradation(DEGRADE[task], kernels_dir=args.kernels)
        for index, photo in enumerate(photos[: args.random_count if random else args.count]):
            degraded, _ = degradation(read_image(photo).rgb, index)
            res = measure_one(engines, degraded, (crop[0], crop[1]), tile, args.overlap, methods)
            rec = {
                "network": name,
                "backend": f"{engine.name} {engine.precision.value}",
                "image": photo.name,
                "degrade": DEGRADE[task],
                "crop": res["crop"],
                "tile": tile,
                **res,
            }
            records.append(rec)
            if args.json:  # after every photo: a long run that dies keeps what it measured
                write_json(args, records)
            keys = [f"{m}-{mode}" for mode in "1t" for m in methods]
            for key in [k for k in keys if k in res]:
                e = res[key]
                extra = ""
                if key.endswith("t"):
                    extra = f" tile/one rows {e['tile_vs_one_rows_mean']:.2f} (max {e['tile_vs_one_rows_max']:.2f}) cols {e['tile_vs_one_cols_mean']:.2f}"
                print(
                    f"{name:16s} {photo.name:12s} {key:9s} shift line {e['shift_line']:.2f} max {e['shift_max']:.2f} "
                    f"median {e['shift_median']:.3f} | own rows {e['own_rows']:.2f} cols {e['own_cols']:.2f} "
                    f"pass rows {e['pass_rows']:.2f} cols {e['pass_cols']:.2f}{extra} "
                    f"| {e['seconds']:.1f} s ({e['seconds_vs_plain']:.2f}x)",
                    flush=True,
                )
        if args.time_size:
            size = tuple(int(v) for v in args.time_size.split("x"))
            timing = time_default(
                restorers, photos[: args.time_count], (size[0], size[1]), args.rounds
            )
            records.append(
                {
                    "network": name,
                    "backend": f"{engine.name} {engine.precision.value}",
                    "timing": timing,
                }
            )
            if args.json:
                write_json(args, records)
            print(
                f"{name:16s} default-options time {args.time_size}: fix/keep "
                f"{timing['time_ratio']:.3f} wall, {timing['cpu_ratio']:.3f} CPU "
                f"(warm rounds, wall: {timing['time_ratio_warm']})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
