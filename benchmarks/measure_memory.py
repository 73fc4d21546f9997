"""Peak memory per pixel of one MPRNet forward pass on the CPU, for each network width.

Why: `pipeline.auto_tile` turns free memory into a tile side through a per-pixel cost
(`bytes_per_pixel`). That cost depends on the network's widths, so it is measured here
for the published configs and a few compact ones, and a formula in the config is fitted
so that checkpoints of any other width still get an estimate.

How (each (config, tile side) runs in a fresh subprocess, so nothing is inherited):

1. build the network with random weights (seed 0), `eval()`, float32, channels_last,
   exactly as `TorchBackend` places it; run one warm-up forward at 64x64 so that one-off
   costs (oneDNN kernels, thread pools) are not charged to the pixels;
2. reset the kernel's peak-RSS mark (`/proc/self/clear_refs` <- 5; where that is not
   possible the `ru_maxrss` before the pass is the baseline), read VmRSS;
3. create a 1x3xSxS channels_last input and run the forward under
   `torch.inference_mode()` `--passes` times (the pipeline runs tile after tile, so the
   2nd pass shows allocator growth); peak = VmHWM - VmRSS(before);
4. at the smallest side, also count the peak of *live tensor storage* during one pass
   (a TorchDispatchMode adds every new output storage and subtracts it when freed):
   what a tensor allocator must hold at least, i.e. the GPU-side estimate minus the
   caching allocator's rounding and cuDNN workspaces.

Per config, bytes = a + b * pixels is least-squares fitted to the peaks at all sides;
b (bytes per pixel) is what `auto_tile` needs, a is a per-tile constant (scratch
buffers, allocator slack) that `auto_tile` should subtract from the budget first.

Run: python3 benchmarks/measure_memory.py --json benchmarks/results/memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import (
    host_info,
    maxrss_bytes,
    measured_at,
    reset_peak,
    spawn_child,
    status_bytes,
)

SCHEMA = 1
DEFAULT_SIZES = (128, 256, 384)  # wide nets stop at --wide-max-side

# name -> MPRNetConfig keyword arguments (defaults: kernel 3, reduction 4, no bias).
CONFIGS: dict[str, dict[str, int]] = {
    "derain": {"n_feat": 40, "scale_unetfeats": 20, "scale_orsnetfeats": 16, "num_cab": 8},
    "denoise": {"n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32, "num_cab": 8},
    "deblur": {"n_feat": 96, "scale_unetfeats": 48, "scale_orsnetfeats": 32, "num_cab": 8},
    "compact-32": {"n_feat": 32, "scale_unetfeats": 16, "scale_orsnetfeats": 12, "num_cab": 4},
    "compact-24": {"n_feat": 24, "scale_unetfeats": 12, "scale_orsnetfeats": 8, "num_cab": 4},
    # Same widths as derain, half the blocks: shows whether depth matters (it should not).
    "derain-cab4": {"n_feat": 40, "scale_unetfeats": 20, "scale_orsnetfeats": 16, "num_cab": 4},
}
# Cheapest first, so an interrupted run still has the small nets.
DEFAULT_ORDER = ("compact-24", "compact-32", "derain-cab4", "derain", "denoise", "deblur")


# --------------------------------------------------------------------------- child side


def _live_tensor_peak(model: Any, x: Any) -> int:
    """Peak bytes of tensor storage alive at once during one forward pass (see module doc)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Live(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.current = 0
            self.peak = 0
            self.seen: set[int] = set()

        def _free(self, key: int, nbytes: int) -> None:
            self.current -= nbytes
            self.seen.discard(key)

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes == 0 or key in self.seen:
                    continue  # in-place results and views share a counted storage
                self.seen.add(key)
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key, nbytes)
            return out

    mode = Live()
    with torch.inference_mode(), mode:
        xx = x.clone()  # the input tile is counted too
        out = model(xx)
        del out, xx
    return mode.peak


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One (config, side) measurement in this (fresh) process."""
    import torch

    from mprnet_cli.model import MPRNet, MPRNetConfig

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    side = int(spec["side"])
    fmt = torch.channels_last
    model = MPRNet(MPRNetConfig(**spec["config"])).eval().requires_grad_(False)
    model.to(memory_format=fmt)  # type: ignore[call-overload]
    with torch.inference_mode():
        model(torch.rand(1, 3, 64, 64).contiguous(memory_format=fmt))

    hwm = reset_peak()
    before = status_bytes().get("VmRSS", 0) if hwm else maxrss_bytes()
    peaks: list[int] = []
    seconds: list[float] = []
    x = torch.rand(1, 3, side, side).contiguous(memory_format=fmt)
    for _ in range(int(spec["passes"])):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(x)[0]
        seconds.append(time.perf_counter() - t0)
        del out
        peak = status_bytes()["VmHWM"] if hwm else maxrss_bytes()
        peaks.append(peak - before)
    result: dict[str, Any] = {
        "side": side,
        "pixels": side * side,
        "method": "VmHWM after clear_refs" if hwm else "ru_maxrss (no reset)",
        "baseline_rss_bytes": before,
        "peak_delta_bytes_per_pass": peaks,
        "seconds_per_pass": seconds,
        "threads": torch.get_num_threads(),
    }
    if spec.get("live"):
        result["live_tensor_peak_bytes"] = _live_tensor_peak(model, x)
    return result


# --------------------------------------------------------------------------- parent side


@dataclass
class Fit:
    a_bytes: float
    b_bytes_per_pixel: float
    max_abs_residual_bytes: float


def fit_line(pixels: list[int], peaks: list[int]) -> Fit:
    """Least-squares bytes = a + b * pixels."""
    px = np.asarray(pixels, dtype=np.float64)
    y = np.asarray(peaks, dtype=np.float64)
    design = np.stack([np.ones_like(px), px], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = float(np.max(np.abs(design @ np.array([a, b]) - y))) if len(px) > 2 else 0.0
    return Fit(float(a), float(b), residual)


def _features(cfg: dict[str, int]) -> dict[str, float]:
    """Candidate predictors of bytes/pixel from a config (n, s, o = n_feat, scale_unetfeats,
    scale_orsnetfeats); channels at 1/2 and 1/4 resolution weigh 1/4 and 1/16 per pixel."""
    n, s, o = cfg["n_feat"], cfg["scale_unetfeats"], cfg["scale_orsnetfeats"]
    return {
        "n_feat": float(n),
        "n_feat+scale_orsnetfeats": float(n + o),
        "sum_of_widths": float(n + (n + s) + (n + 2 * s) + (n + o)),
        "full_res_equivalent": float(n + o + n + (n + s) / 4 + (n + 2 * s) / 16),
    }


def derive_formulas(b_by_name: dict[str, float]) -> list[dict[str, Any]]:
    """For each candidate, b ~= k * feature (least squares through 0), with max relative error."""
    names = list(b_by_name)
    b = np.array([b_by_name[n] for n in names])
    feats = {n: _features({**CONFIGS[n]}) for n in names}
    out: list[dict[str, Any]] = []
    for key in feats[names[0]]:
        f = np.array([feats[n][key] for n in names])
        k = float(f @ b / (f @ f))
        rel = (k * f - b) / b
        out.append(
            {
                "form": f"b = {k:.2f} * ({key})",
                "feature": key,
                "k_bytes_per_pixel_per_channel": k,
                "max_abs_rel_error": float(np.max(np.abs(rel))),
                "rel_error": {n: float(r) for n, r in zip(names, rel, strict=True)},
            }
        )
    # Two terms: b = alpha * n_feat + beta * scale_orsnetfeats + gamma * scale_unetfeats.
    design = np.array(
        [
            [CONFIGS[n]["n_feat"], CONFIGS[n]["scale_orsnetfeats"], CONFIGS[n]["scale_unetfeats"]]
            for n in names
        ],
        dtype=np.float64,
    )
    if len(names) >= 4:
        coef, *_ = np.linalg.lstsq(design, b, rcond=None)
        rel = (design @ coef - b) / b
        out.append(
            {
                "form": (
                    f"b = {coef[0]:.2f}*n_feat + {coef[1]:.2f}*scale_orsnetfeats"
                    f" + {coef[2]:.2f}*scale_unetfeats"
                ),
                "feature": "linear(n_feat, scale_orsnetfeats, scale_unetfeats)",
                "coefficients": [float(c) for c in coef],
                "max_abs_rel_error": float(np.max(np.abs(rel))),
                "rel_error": {n: float(r) for n, r in zip(names, rel, strict=True)},
            }
        )
    out.sort(key=lambda d: float(d["max_abs_rel_error"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Measure MPRNet's peak CPU memory per pixel (fresh subprocess per tile side, "
            "peak-RSS delta of one forward pass) and fit bytes = a + b*pixels per config."
        )
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_ORDER),
        choices=list(CONFIGS),
        help="configs to measure (default: all, cheapest first)",
    )
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES), help="square tile sides"
    )
    parser.add_argument(
        "--wide-max-side",
        type=int,
        default=256,
        help="largest side for configs with n_feat >= 64 (they are slow on 2 cores)",
    )
    parser.add_argument("--passes", type=int, default=2, help="forward passes per subprocess")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    if any(s % 8 or s < 64 for s in args.sizes):
        parser.error("--sizes must be multiples of 8, at least 64")

    sizes = sorted(set(args.sizes))
    started = time.perf_counter()
    results: dict[str, Any] = {}
    print(f"{'config':<12} {'side':>5} {'MiB pass1':>10} {'MiB peak':>9} {'B/px':>7} {'s/pass':>7}")
    for name in args.configs:
        points: list[dict[str, Any]] = []
        wide = CONFIGS[name]["n_feat"] >= 64
        for side in [s for s in sizes if not wide or s <= args.wide_max_side] or sizes[:1]:
            spec = {
                "config": CONFIGS[name],
                "side": side,
                "passes": args.passes,
                "threads": args.threads,
                "live": not points,
            }
            r = spawn_child(__file__, spec, args.timeout)
            points.append(r)
            peak = max(r["peak_delta_bytes_per_pass"])
            print(
                f"{name:<12} {side:>5} {r['peak_delta_bytes_per_pass'][0] / 2**20:>10.1f} "
                f"{peak / 2**20:>9.1f} {peak / r['pixels']:>7.0f} "
                f"{min(r['seconds_per_pass']):>7.2f}",
                flush=True,
            )
        pixels = [p["pixels"] for p in points]
        fit = fit_line(pixels, [max(p["peak_delta_bytes_per_pass"]) for p in points])
        fit1 = fit_line(pixels, [p["peak_delta_bytes_per_pass"][0] for p in points])
        live = points[0].get("live_tensor_peak_bytes")
        results[name] = {
            "config": CONFIGS[name],
            "points": points,
            "fit": asdict(fit),
            "fit_first_pass": asdict(fit1),
            "live_tensor_bytes_per_pixel": live / pixels[0] if live else None,
        }

    b_by_name = {n: r["fit"]["b_bytes_per_pixel"] for n, r in results.items()}
    formulas = derive_formulas(b_by_name) if len(b_by_name) >= 2 else []
    live_by_name = {
        n: float(r["live_tensor_bytes_per_pixel"])
        for n, r in results.items()
        if r["live_tensor_bytes_per_pixel"]
    }
    live_formulas = derive_formulas(live_by_name) if len(live_by_name) >= 2 else []

    print("\nFit bytes = a + b*pixels (peak over all passes; first pass in brackets)")
    print(
        f"{'config':<12} {'n/s/o/cab':>12} {'b B/px':>8} {'(pass1)':>8} {'a MiB':>7} "
        f"{'resid MiB':>9} {'live B/px':>9}"
    )
    for name, r in results.items():
        c = r["config"]
        shape = f"{c['n_feat']}/{c['scale_unetfeats']}/{c['scale_orsnetfeats']}/{c['num_cab']}"
        live = r["live_tensor_bytes_per_pixel"]
        print(
            f"{name:<12} {shape:>12} {r['fit']['b_bytes_per_pixel']:>8.0f} "
            f"{r['fit_first_pass']['b_bytes_per_pixel']:>8.0f} {r['fit']['a_bytes'] / 2**20:>7.1f} "
            f"{r['fit']['max_abs_residual_bytes'] / 2**20:>9.1f} "
            f"{live if live is not None else float('nan'):>9.0f}"
        )
    for title, fs in (("peak-RSS b", formulas), ("live-tensor b", live_formulas)):
        if fs:
            print(f"\nFormulas for {title} from the config (max |relative error| over configs)")
            for f in fs:
                print(f"  {f['max_abs_rel_error'] * 100:5.1f}%  {f['form']}")

    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s total")
    if args.json is not None:
        doc = {
            "schema": SCHEMA,
            "what": "peak CPU memory of one MPRNet forward pass, bytes = a + b * pixels",
            "method": (
                "fresh subprocess per (config, side); random weights (seed 0), eval, float32, "
                "channels_last, inference_mode; warm-up at 64x64; peak RSS reset via "
                "/proc/self/clear_refs; peak = VmHWM - VmRSS before creating the input; "
                f"{args.passes} passes, fit on the max; live = peak of live tensor storage"
            ),
            "sizes": sizes,
            "host": host_info(),
            "measured_at": measured_at(),
            "seconds": elapsed,
            "configs": results,
            "bytes_per_pixel": {n: r["fit"]["b_bytes_per_pixel"] for n, r in results.items()},
            "live_bytes_per_pixel": live_by_name,
            "formulas": formulas,
            "live_formulas": live_formulas,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
