"""Seams, accuracy, speed and memory of tiled MPRNet inference (the "large images" issue).

Why: tiling must be invisible (no seams), close to the untiled result, nearly as fast as
one pass, and keep memory flat as images grow. Each section measures one of these with
`restore_array` and a `TorchBackend`, as the CLI runs them (CPU, float32, channels_last).

Sections (``--sections``; all by default):

seams  One real photo, clean and with Gaussian noise (sigma 25/255, clipped to [0, 1]),
       restored untiled and for every (tile, overlap). Reported per run:
       * PSNR(tiled, untiled) and the largest absolute difference (outputs clipped to
         [0, 1] as `restore_array` returns them);
       * the seam score, per axis: mean |d/dx| of the output over the gradient columns at
         tile boundaries divided by the mean |d/dx| over the columns 4..8 px away on both
         sides (columns within 3 px of another boundary excluded); rows likewise with
         |d/dy|; the score is the max of the two axes (1.00 = invisible). Column index j
         is the step between pixels j and j+1 of the output. Boundaries (in the padded
         coordinates of the plan, which share the origin with the output):
           - "edge": where a tile's contribution ends or starts, j = x1 - 1 and j = x0 - 1
             for every internal tile side;
           - "centre": the middle of each actual overlap of neighbours a, b (b0 < a1),
             j = (b0 + a1) // 2 - 1 (= the edge when the tiles only touch);
         "base" is the untiled output's score at the same edge positions (what natural
         image structure alone gives), "worst" the largest single-line ratio, "res" the
         edge score of the network's contribution (output - input), which is far more
         sensitive than the output itself;
       * "split": the score on every tile's half lines, j = x0 + width // 2 - 1. MPRNet
         runs stage 1 on the four quarters and stage 2 on the two halves of its input,
         so its output can step there (with random weights it does, strongly; the
         untiled output's own half lines are printed per variant for comparison).
         Edges and centres within 3 px of a split line are left out of their scores
         ("drp" counts them), so the columns separate blending seams from the model's;
       * for overlap 0, mean |tiled - untiled| by distance to the nearest tile edge: how
         far tile-border effects reach into a tile (sets the overlap needed).
       Tile outputs are cached by content hash within one image, so tiles that several
       plans share run once (results are identical; timings from this section are not
       used).
erf    Effective receptive field: |d out(p) / d input| around one pixel p of a 256x256
       crop; radii that hold 50/90/99% of the gradient mass.
cost   Throughput on one image (the photo reflect-tiled to --cost-size): untiled, tiled at
       the default TileOptions (tile auto = 512 without a bytes_per_pixel, overlap 32),
       and a *balanced* plan (same maximum tile, tiles per axis spread evenly: a proposed
       planner, emulated here with the pipeline's own helpers). Reports the ratio of
       images per second and splits it into pixel overhead (pixels run / image pixels)
       and per-pixel speed; projects the overhead for larger images from the plans.
rss    Peak RSS of a whole `restore_array` run in fresh subprocesses on synthetic images:
       the real network at --rss-real-size, and a cheap stand-in network (a chain of
       full-resolution feature maps sized to the real network's measured per-tile peak,
       no convolutions) at every --rss-sizes, compared with the image buffers
       (input H*W*3*4 + accumulators H8*W8*(3+1)*4 bytes). tracemalloc (which sees numpy
       allocations, not torch's) gives the pipeline's own numpy peak exactly.

Without --weights the network has RANDOM weights (derain config, fixed seed): its channel
attention makes tile differences larger than trained weights do, so PSNR is a lower bound.

Run: python3 benchmarks/bench_tiling.py --json benchmarks/results/tiling_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import math
import os
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import (
    host_info,
    measured_at,
    peak_rss_bytes,
    reset_peak,
    spawn_child,
    status_bytes,
)
from numpy.typing import NDArray
from torch import nn

from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.evaluation import metrics
from mprnet_cli.imageio import read_image
from mprnet_cli.inference.pipeline import (
    ALIGN,
    TileOptions,
    _cut,
    auto_tile,
    reflect_index,
    restore_array,
)
from mprnet_cli.inference.tiling import Blender, Tile, plan_tiles, round_up
from mprnet_cli.model import MPRNet, build_model, read_checkpoint
from mprnet_cli.weights import published_configs

SCHEMA = 1
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "data" / "samples" / "mate-LadyBird.png"
SECTIONS = ("seams", "erf", "cost", "rss")
FloatImage = NDArray[np.float32]
# Distance-to-edge bins (px) for the overlap-0 difference profile.
DIST_BINS = (0, 2, 4, 8, 16, 32, 64, 128, 10**9)


# --------------------------------------------------------------------------- engines


def weights_label(weights: Path | None, seed: int) -> str:
    if weights is None:
        return f"RANDOM WEIGHTS (derain config, torch seed {seed}) - not a trained network"
    return str(weights)


def build_network(weights: Path | None, seed: int) -> MPRNet:
    """The network under test: a checkpoint, or the derain config with seeded random weights."""
    if weights is not None:
        return build_model(read_checkpoint(weights))
    torch.manual_seed(seed)
    return MPRNet(published_configs()["derain"])


class CachingEngine(TorchBackend):
    """A TorchBackend that returns the stored output for a tile it has already seen (by content).

    Many (tile, overlap) plans share tiles (row 0, column 0, the flush last tiles), so
    the sweep runs each distinct tile once; the outputs are the same tensors either way.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, torch.device("cpu"))
        self.cache: dict[tuple[tuple[int, ...], bytes], torch.Tensor] = {}
        self.pixels_run = 0

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        outs = []
        for tile in torch.split(batch, 1):
            key = (
                tuple(tile.shape),
                hashlib.blake2b(tile.numpy().tobytes(), digest_size=16).digest(),
            )
            hit = self.cache.get(key)
            if hit is None:
                hit = super().run(tile)
                self.cache[key] = hit
                self.pixels_run += tile.shape[-1] * tile.shape[-2]
            outs.append(hit)
        return torch.cat(outs)


# --------------------------------------------------------------------------- metrics


@dataclass
class Lines:
    """Gradient indices along one axis: tile edges, overlap centres, and MPRNet's own
    split lines (it runs stage 1 on the four quarters and stage 2 on the two halves of
    its input, so each tile's output can step at its half lines)."""

    edges: list[int]
    centres: list[int]
    splits: list[int]
    all_edges: list[int]  # edges including those near split lines
    edges_dropped: int  # edges/centres within 3 px of a split line, left out of their score
    centres_dropped: int


def boundary_positions(tiles: Iterable[Tile], padded: int, size: int, axis: str) -> Lines:
    """Where to measure along one axis (see the module docstring).

    `padded` is the plan's axis length, `size` the output's; index j is the step between
    pixels j and j+1, so only 0 <= j <= size - 2 can be measured.
    """
    spans = sorted({(t.x0, t.x1) if axis == "x" else (t.y0, t.y1) for t in tiles})
    edges: set[int] = set()
    for start, end in spans:
        if start > 0:
            edges.add(start - 1)
        if end < padded:
            edges.add(end - 1)
    centres = {(b0 + a1) // 2 - 1 for (_a0, a1), (b0, _b1) in itertools.pairwise(spans)}
    splits = {start + (end - start) // 2 - 1 for start, end in spans}
    ok = range(size - 1)
    near_split = {j + d for j in splits for d in range(-3, 4)}
    e = sorted(j for j in edges if j in ok)
    c = sorted(j for j in centres if j in ok)
    return Lines(
        edges=[j for j in e if j not in near_split],
        centres=[j for j in c if j not in near_split],
        splits=sorted(j for j in splits if j in ok),
        all_edges=e,
        edges_dropped=sum(j in near_split for j in e),
        centres_dropped=sum(j in near_split for j in c),
    )


@dataclass
class Seam:
    score: float  # max over the two axes of boundary / reference mean gradient
    x: float
    y: float
    worst_line: float  # largest single-line ratio (line vs its own neighbours)
    lines: int


def _axis_profile(img: FloatImage, axis: str) -> NDArray[np.float64]:
    """Mean |gradient| per gradient column (axis x) or row (axis y), over channels."""
    f = img.astype(np.float32, copy=False)
    g = np.abs(np.diff(f, axis=1 if axis == "x" else 0))
    return np.asarray(g.mean(axis=(0, 2) if axis == "x" else (1, 2), dtype=np.float64))


def _axis_score(profile: NDArray[np.float64], positions: Sequence[int]) -> tuple[float, float]:
    if not positions:
        return math.nan, math.nan
    n = len(profile)
    near = {p + d for p in positions for d in range(-3, 4)}
    refs_all: set[int] = set()
    worst = 0.0
    for p in positions:
        refs = [
            p + s * d
            for d in range(4, 9)
            for s in (-1, 1)
            if 0 <= p + s * d < n and p + s * d not in near
        ]
        refs_all.update(refs)
        if refs:
            worst = max(worst, float(profile[p] / profile[refs].mean()))
    ratio = float(profile[list(positions)].mean() / profile[sorted(refs_all)].mean())
    return ratio, worst


def seam_score(img: FloatImage, xs: Sequence[int], ys: Sequence[int]) -> Seam:
    sx, wx = _axis_score(_axis_profile(img, "x"), xs)
    sy, wy = _axis_score(_axis_profile(img, "y"), ys)
    finite = [v for v in (sx, sy) if not math.isnan(v)]
    worst = [v for v in (wx, wy) if not math.isnan(v)]
    return Seam(
        score=max(finite) if finite else math.nan,
        x=sx,
        y=sy,
        worst_line=max(worst) if worst else math.nan,
        lines=len(xs) + len(ys),
    )


def distance_to_edges(h: int, w: int, xs: Sequence[int], ys: Sequence[int]) -> NDArray[np.int64]:
    """Per pixel, distance (px) to the nearest tile edge; an edge at step j lies between
    pixels j and j+1, so both of those are at distance 0."""

    def axis(n: int, steps: Sequence[int]) -> NDArray[np.int64]:
        if not steps:
            return np.full(n, 10**9, dtype=np.int64)
        i = np.arange(n)[:, None]
        s = np.asarray(steps)[None, :]
        d = np.minimum(np.abs(i - s), np.abs(i - (s + 1)))
        return np.asarray(d.min(axis=1), dtype=np.int64)

    dy, dx = axis(h, ys), axis(w, xs)
    return np.minimum(dy[:, None], dx[None, :])


def diff_profile(
    tiled: FloatImage, untiled: FloatImage, xs: Sequence[int], ys: Sequence[int]
) -> dict[str, float]:
    h, w = tiled.shape[:2]
    dist = distance_to_edges(h, w, xs, ys)
    diff = np.abs(tiled.astype(np.float64) - untiled).mean(axis=2)
    out: dict[str, float] = {}
    for lo, hi in itertools.pairwise(DIST_BINS):
        m = (dist >= lo) & (dist < hi)
        if m.any():
            out[f"{lo}-{hi if hi < 10**9 else 'inf'}"] = float(diff[m].mean())
    return out


# --------------------------------------------------------------------------- seams


def add_noise(rgb: FloatImage, sigma: float, seed: int) -> FloatImage:
    rng = np.random.default_rng(seed)
    noisy = rgb + rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def run_seams(
    model: nn.Module,
    photo: FloatImage,
    tiles: Sequence[int],
    overlaps: Sequence[int],
    noisy_overlaps: Sequence[int] | None,
    sigma: float,
    seed: int,
) -> dict[str, Any]:
    h, w = photo.shape[:2]
    print(f"image {w}x{h}; columns: see the module docstring")
    ph, pw = round_up(h, ALIGN), round_up(w, ALIGN)
    variants = {"clean": photo, f"noisy sigma {sigma:g}": add_noise(photo, sigma, seed + 1)}
    results: dict[str, Any] = {}
    header = (
        f"{'variant':<15} {'tile':>4} {'ovl':>3} {'n':>4} {'px x':>5} {'PSNR dB':>8} "
        f"{'max|d|':>7} {'edge':>6} {'centre':>6} {'base':>6} {'worst':>6} {'res':>6} "
        f"{'split':>6} {'drp':>3}"
    )
    print(header)
    for name, rgb in variants.items():
        engine = CachingEngine(model)
        t0 = time.perf_counter()
        untiled, _ = restore_array(engine, rgb, TileOptions(tile=0))
        untiled = untiled.copy()
        untiled_s = time.perf_counter() - t0
        split_base = seam_score(untiled, [pw // 2 - 1], [ph // 2 - 1])
        print(
            f"{name:<15} untiled: seam score at its own half lines (MPRNet's split) "
            f"{split_base.score:.3f}"
        )
        rows = []
        sweep = overlaps if name == "clean" or noisy_overlaps is None else noisy_overlaps
        for tile in tiles:
            for overlap in sweep:
                if tile >= max(ph, pw) or overlap >= tile:
                    continue
                plan = plan_tiles(ph, pw, tile, min(overlap, max(tile - ALIGN, 0)))
                out, stats = restore_array(engine, rgb, TileOptions(tile=tile, overlap=overlap))
                if stats.oom_splits:
                    raise RuntimeError("out-of-memory recovery changed the plan; rerun")
                lx = boundary_positions(plan.tiles, pw, w, "x")
                ly = boundary_positions(plan.tiles, ph, h, "y")
                ex, ey = lx.edges, ly.edges
                edge = seam_score(out, ex, ey)
                centre = seam_score(out, lx.centres, ly.centres)
                base = seam_score(untiled, ex, ey)
                residual = seam_score(out - rgb, ex, ey)
                split = seam_score(out, lx.splits, ly.splits)
                row: dict[str, Any] = {
                    "tile": tile,
                    "overlap": overlap,
                    "tiles": len(plan),
                    "pixel_overhead": sum(t.height * t.width for t in plan) / (ph * pw),
                    "psnr_vs_untiled_db": metrics.psnr(out, untiled, 1.0),
                    "max_abs_diff": float(np.max(np.abs(out - untiled))),
                    "seam_edge": edge.__dict__,
                    "seam_centre": centre.__dict__,
                    "seam_edge_untiled_baseline": base.__dict__,
                    "seam_edge_residual": residual.__dict__,
                    "seam_tile_split_lines": split.__dict__,
                    "seam_split_untiled": split_base.__dict__,
                    "lines": {"x": lx.__dict__, "y": ly.__dict__},
                }
                if overlap == 0:
                    row["mean_abs_diff_by_edge_distance"] = diff_profile(
                        out, untiled, lx.all_edges, ly.all_edges
                    )
                rows.append(row)
                print(
                    f"{name:<15} {tile:>4} {overlap:>3} {len(plan):>4} "
                    f"{row['pixel_overhead']:>5.2f} {row['psnr_vs_untiled_db']:>8.2f} "
                    f"{row['max_abs_diff']:>7.4f} {edge.score:>6.3f} {centre.score:>6.3f} "
                    f"{base.score:>6.3f} {max(edge.worst_line, centre.worst_line):>6.3f} "
                    f"{residual.score:>6.3f} {split.score:>6.3f} "
                    f"{lx.edges_dropped + ly.edges_dropped:>3}",
                    flush=True,
                )
        results[name] = {
            "untiled_seconds": untiled_s,
            "untiled_split_line_seam": split_base.__dict__,
            "pixels_run": engine.pixels_run,
            "runs": rows,
        }
        profiles = [r for r in rows if r["overlap"] == 0]
        if profiles:
            bins = list(profiles[0]["mean_abs_diff_by_edge_distance"])
            print(f"  {name}, overlap 0: mean |tiled - untiled| by distance to nearest tile edge")
            print("  " + f"{'tile':>4} " + " ".join(f"{b + ' px':>10}" for b in bins))
            for r in profiles:
                prof = r["mean_abs_diff_by_edge_distance"]
                print(
                    "  "
                    + f"{r['tile']:>4} "
                    + " ".join(f"{prof.get(b, math.nan):>10.5f}" for b in bins)
                )
    return results


# --------------------------------------------------------------------------- receptive field


def run_erf(model: nn.Module, photo: FloatImage, side: int = 256) -> dict[str, Any]:
    """|d out[:, p] / d in| for one pixel p (off the network's quarter/half split lines)."""
    crop = photo[:side, :side] if min(photo.shape[:2]) >= side else photo
    h, w = crop.shape[:2]
    h, w = h - h % ALIGN, w - w % ALIGN
    x = torch.from_numpy(np.ascontiguousarray(crop[:h, :w])).permute(2, 0, 1)[None].clone()
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    py, px = int(h * 0.4), int(w * 0.4)
    model.eval()
    out = model(x)[0]
    out[0, :, py, px].sum().backward()
    assert x.grad is not None
    g = x.grad.abs().sum(dim=1)[0].numpy().astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.maximum(np.abs(yy - py), np.abs(xx - px)).ravel()  # Chebyshev: square windows
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(g.ravel()[order])
    mass = cum / cum[-1]
    radii = {f"r{int(q * 100)}": int(r[order][np.searchsorted(mass, q)]) for q in (0.5, 0.9, 0.99)}
    far = float(g[r.reshape(h, w) > 64].mean() / g.max())
    print(
        f"effective receptive field around ({py}, {px}) of a {h}x{w} crop: square half-widths "
        + ", ".join(f"{k}={v} px" for k, v in radii.items())
        + f"; mean |grad| beyond 64 px = {far:.2e} of the peak (global channel attention)"
    )
    local = local_support(model, x.detach(), py, px)
    print(
        "theoretical local receptive field (all weights made positive, attention gates "
        f"detached): square half-width {local} px"
        + (" (reaches the crop border)" if local >= min(py, px, h - 1 - py, w - 1 - px) else "")
    )
    return {
        "crop": [h, w],
        "pixel": [py, px],
        **radii,
        "far_over_peak": far,
        "local_support_half_width": local,
    }


def local_support(model: nn.Module, x: torch.Tensor, py: int, px: int) -> int:
    """Half-width of the input region that can affect output pixel (py, px) through
    convolutions alone: the gradient's support with |weights| (no cancellation) and the
    channel-attention gates detached (their global mean reaches every pixel anyway)."""
    from mprnet_cli.model.network import CALayer

    probe = copy.deepcopy(model)
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_()
            if p.ndim == 4:  # each output a weighted mean of its inputs: no overflow
                p.div_(p.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12))

    def gate_detached(self: CALayer, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            gate: torch.Tensor = self.conv_du(t.mean(dim=(2, 3), keepdim=True))
        return t * gate

    original = CALayer.forward
    CALayer.forward = gate_detached  # type: ignore[method-assign,assignment]
    try:
        xx = x.clone().requires_grad_(True)
        target = probe(xx)[0][0, :, py, px].sum()
        # Far gradients are products of many small weights and near ones grow through the
        # residual sums: scale the seed so the largest gradient sits just below float32's
        # maximum, keeping the far ones from underflowing to 0.
        seed, top = 1.0, 0.0
        for _ in range(4):
            xx.grad = None
            target.backward(torch.tensor(seed), retain_graph=True)
            assert xx.grad is not None
            top = float(xx.grad.abs().max())
            if math.isfinite(top) and top > 0:
                break
            seed *= 1e-12
        xx.grad = None
        target.backward(torch.tensor(seed * 1e37 / top))
    finally:
        CALayer.forward = original  # type: ignore[method-assign]
    assert xx.grad is not None
    grad = xx.grad.abs().sum(dim=1)[0]
    if not bool(torch.isfinite(grad).all()):
        raise RuntimeError("receptive-field probe overflowed")
    ys, xs = np.nonzero(grad.numpy() > 0)
    return int(max(np.abs(ys - py).max(), np.abs(xs - px).max()))


# --------------------------------------------------------------------------- cost


def crop(rgb: FloatImage, spec: str) -> FloatImage:
    """'WxH+X+Y' crop (clamped to the image); '' keeps the whole image."""
    if not spec:
        return rgb
    size, x, y = spec.split("+")
    h, w = parse_size(size)
    return np.ascontiguousarray(rgb[int(y) : int(y) + h, int(x) : int(x) + w])


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def reflect_to(rgb: FloatImage, h: int, w: int) -> FloatImage:
    reps = (math.ceil(h / rgb.shape[0]), math.ceil(w / rgb.shape[1]))
    rows = np.concatenate([rgb if i % 2 == 0 else rgb[::-1] for i in range(reps[0])], axis=0)
    full = np.concatenate([rows if j % 2 == 0 else rows[:, ::-1] for j in range(reps[1])], axis=1)
    return np.ascontiguousarray(full[:h, :w], dtype=np.float32)


def balanced_axis(size: int, max_tile: int, overlap: int) -> tuple[int, list[int]]:
    """Proposed planner, one axis: the fewest equal, aligned tiles of at most `max_tile`
    whose neighbours overlap by at least `overlap`, spread evenly over the axis."""
    if size <= max_tile:
        return size, [0]
    for n in range(max(2, math.ceil((size - overlap) / (max_tile - overlap))), size):
        length = round_up(math.ceil((size + (n - 1) * overlap) / n), ALIGN)
        while length <= max_tile:
            step = (size - length) / (n - 1)
            starts = [round(i * step / ALIGN) * ALIGN for i in range(n - 1)] + [size - length]
            if all(b - a <= length - overlap for a, b in itertools.pairwise(starts)):
                return length, starts
            length += ALIGN
    raise ValueError(f"cannot plan {size} px with tiles <= {max_tile} and overlap {overlap}")


def balanced_plan(ph: int, pw: int, max_tile: int, overlap: int) -> list[Tile]:
    th, ys = balanced_axis(ph, max_tile, overlap)
    tw, xs = balanced_axis(pw, max_tile, overlap)
    return [Tile(y, x, y + th, x + tw) for y in ys for x in xs]


def restore_with_plan(
    engine: TorchBackend, rgb: FloatImage, tiles: Sequence[Tile], overlap: int
) -> FloatImage:
    """`restore_array` with a given plan (same cutting, engine and blending, no OOM logic)."""
    h, w = rgb.shape[:2]
    ph, pw = round_up(h, ALIGN), round_up(w, ALIGN)
    rows, cols = reflect_index(ph, h), reflect_index(pw, w)
    blender = Blender(ph, pw, 3, overlap)
    for t in tiles:
        x = torch.from_numpy(np.stack([_cut(rgb, t, rows, cols)])).permute(0, 3, 1, 2)
        blender.add(t, engine(x)[0].permute(1, 2, 0).numpy())
    result = blender.result()[:h, :w]
    np.clip(result, 0.0, 1.0, out=result)
    return result


def plan_pixels(tiles: Iterable[Tile]) -> int:
    return sum(t.height * t.width for t in tiles)


def run_cost(
    model: nn.Module, photo: FloatImage, size: tuple[int, int], repeats: int
) -> dict[str, Any]:
    h, w = size
    rgb = reflect_to(photo, h, w)
    ph, pw = round_up(h, ALIGN), round_up(w, ALIGN)
    engine = TorchBackend(model, torch.device("cpu"))  # as the Restorer builds it
    default = TileOptions()
    tile = auto_tile(engine, ph, pw) if default.tile is None else default.tile
    overlap = default.overlap
    plan = plan_tiles(ph, pw, tile, min(overlap, tile - ALIGN)) if tile else None
    bal = balanced_plan(ph, pw, tile, overlap) if tile else None
    with torch.inference_mode():  # warm-up (thread pool, kernels), not timed
        engine(torch.rand(1, 3, 64, 64))
    modes: dict[str, list[float]] = {"untiled": [], "default": [], "balanced": []}
    psnrs: dict[str, list[float]] = {"default": [], "balanced": []}
    reference: FloatImage | None = None
    for _ in range(repeats):
        for mode in ("untiled", "default", "balanced"):
            t0 = time.perf_counter()
            if mode == "untiled":
                out, _ = restore_array(engine, rgb, TileOptions(tile=0))
                reference = out.copy()
            elif mode == "default":
                out, stats = restore_array(engine, rgb, default)
                assert stats.tile_size == tile and not stats.oom_splits
            else:
                assert bal is not None
                out = restore_with_plan(engine, rgb, bal, overlap)
            modes[mode].append(time.perf_counter() - t0)
            if reference is not None and mode != "untiled":
                psnrs[mode].append(metrics.psnr(out, reference, 1.0))
    image_px = h * w
    pixels = {
        "untiled": ph * pw,
        "default": plan_pixels(plan) if plan else ph * pw,
        "balanced": plan_pixels(bal) if bal else ph * pw,
    }
    best = {m: min(modes[m]) for m in ("untiled", "default", "balanced")}
    rows: dict[str, dict[str, Any]] = {}
    print(
        f"image {w}x{h}, default tile {tile} overlap {overlap}; {repeats} repeat(s), "
        "best time per mode"
    )
    print(
        f"{'mode':<9} {'tiles':>5} {'shape':>9} {'px run x':>8} {'s':>7} {'MP/s':>6} "
        f"{'speed/px':>8} {'ratio':>6}"
    )
    for mode in ("untiled", "default", "balanced"):
        n, shape = 1, f"{pw}x{ph}"
        if mode == "default" and plan:
            n, shape = len(plan), f"{plan.tiles[0].width}x{plan.tiles[0].height}"
        if mode == "balanced" and bal:
            n, shape = len(bal), f"{bal[0].width}x{bal[0].height}"
        overhead = pixels[mode] / (ph * pw)
        speed = pixels[mode] / best[mode] / (pixels["untiled"] / best["untiled"])
        ratio = best["untiled"] / best[mode]
        rows[mode] = {
            "tiles": n,
            "tile_shape_wxh": shape,
            "pixel_overhead": overhead,
            "seconds": modes[mode],
            "best_seconds": best[mode],
            "image_mp_per_s": image_px / best[mode] / 1e6,
            "per_pixel_speed_vs_untiled": speed,
            "throughput_vs_untiled": ratio,
            "psnr_vs_untiled_db": psnrs.get(mode),
        }
        print(
            f"{mode:<9} {n:>5} {shape:>9} {overhead:>8.3f} {best[mode]:>7.1f} "
            f"{image_px / best[mode] / 1e6:>6.3f} {speed:>8.3f} {ratio:>6.3f}"
        )
    speed_default = float(rows["default"]["per_pixel_speed_vs_untiled"])
    projections = []
    print(
        "projected throughput vs untiled = per-pixel speed (measured, default tiles) / "
        "pixel overhead of the plan"
    )
    print(f"{'image':>10} " + " ".join(f"{p:>13}" for p in _PROJECTED))
    for text in ("1024x768", "2000x1500", "4000x3000", "6000x4000", "8000x6000"):
        ih, iw = parse_size(text)
        qh, qw = round_up(ih, ALIGN), round_up(iw, ALIGN)
        cells: dict[str, dict[str, float]] = {}
        for label, (kind, t, o) in _PROJECTED.items():
            tl = (
                plan_tiles(qh, qw, t, o).tiles if kind == "current" else balanced_plan(qh, qw, t, o)
            )
            over = plan_pixels(tl) / (qh * qw)
            cells[label] = {"pixel_overhead": over, "throughput_vs_untiled": speed_default / over}
        projections.append({"image": text, **cells})
        print(
            f"{text:>10} "
            + " ".join(
                f"{c['pixel_overhead']:>6.3f}/{c['throughput_vs_untiled']:>5.2f}"
                for c in (cells[k] for k in _PROJECTED)
            )
        )
    print("  (cells: pixel overhead / projected throughput ratio)")
    return {
        "image_wxh": [w, h],
        "default_tile": tile,
        "default_overlap": overlap,
        "modes": rows,
        "projections": projections,
    }


_PROJECTED = {
    "cur 512/32": ("current", 512, 32),
    "bal 512/32": ("balanced", 512, 32),
    "cur 1024/32": ("current", 1024, 32),
    "bal 1024/32": ("balanced", 1024, 32),
    "bal 1024/64": ("balanced", 1024, 64),
}


# --------------------------------------------------------------------------- rss


class StandIn(nn.Module):
    """Per-tile memory like MPRNet's, almost no arithmetic: `depth` live full-resolution
    maps of `channels` float32 channels each (written, so their pages are resident),
    released at the end; returns the input, as a list like MPRNet."""

    def __init__(self, bytes_per_pixel: float, channels: int = 48) -> None:
        super().__init__()
        self.channels = channels
        self.depth = max(1, round(bytes_per_pixel / (4 * channels)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x[:, :1].expand(-1, self.channels, -1, -1).contiguous()]
        for _ in range(self.depth - 1):
            feats.append(feats[-1] + 1.0)
        out = x + 0.0 * feats[-1][:, :3]
        del feats
        return [out]


def rss_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One `restore_array` run in this fresh process; sizes in bytes."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    h, w = spec["height"], spec["width"]
    if spec["net"] == "real":
        weights = Path(spec["weights"]) if spec.get("weights") else None
        model: nn.Module = build_network(weights, int(spec["seed"]))
    else:
        model = StandIn(float(spec["standin_bytes_per_pixel"]))
    engine = TorchBackend(model, torch.device("cpu"))
    with torch.inference_mode():
        engine(torch.rand(1, 3, 64, 64))
    base = status_bytes().get("VmRSS", 0)
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)  # no temporaries
    reset_peak()
    before = status_bytes().get("VmRSS", 0)
    options = TileOptions(tile=int(spec["tile"]), overlap=int(spec["overlap"]))
    t0 = time.perf_counter()
    result, stats = restore_array(engine, rgb, options)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    out: dict[str, Any] = {
        "net": spec["net"],
        "height": h,
        "width": w,
        "tile": spec["tile"],
        "overlap": spec["overlap"],
        "tiles": stats.tiles,
        "seconds": seconds,
        "rss_base": base,
        "rss_before_run": before,
        "rss_peak": peak,
        "peak_over_before": peak - before,
    }
    if spec.get("tracemalloc"):
        del result
        tracemalloc.start()
        result, _ = restore_array(engine, rgb, options)
        _, numpy_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["numpy_traced_peak"] = numpy_peak
    return out


def run_rss(args: argparse.Namespace) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tile": args.rss_tile,
        "overlap": args.rss_overlap,
        "seed": args.seed,
        "weights": str(args.weights) if args.weights else None,
        "threads": args.threads,
        "standin_bytes_per_pixel": args.standin_bytes_per_pixel,
    }
    cases = [("standin", s) for s in args.rss_sizes]
    if args.rss_real_size:
        cases.insert(0, ("real", args.rss_real_size))
    rows = []
    mib = 2**20
    print(
        f"tile {args.rss_tile} overlap {args.rss_overlap}; stand-in sized to "
        f"{args.standin_bytes_per_pixel:.0f} B/px of tile; MiB"
    )
    print(
        f"{'net':<8} {'image':>10} {'tiles':>5} {'s':>6} {'base':>6} {'peak':>7} "
        f"{'buffers':>7} {'peak-base-buf':>13} {'numpy peak':>10} {'accum':>6}"
    )
    for net, text in cases:
        h, w = parse_size(text)
        spec = {**common, "net": net, "height": h, "width": w, "tracemalloc": net == "standin"}
        r = spawn_child(__file__, spec, args.child_timeout)
        ph, pw = round_up(h, ALIGN), round_up(w, ALIGN)
        image = h * w * 3 * 4
        accum = ph * pw * (3 + 1) * 4
        r["expected_image_bytes"] = image
        r["expected_accumulator_bytes"] = accum
        r["peak_minus_base_minus_buffers"] = r["rss_peak"] - r["rss_base"] - image - accum
        rows.append(r)
        traced = r.get("numpy_traced_peak")
        print(
            f"{net:<8} {text:>10} {r['tiles']:>5} {r['seconds']:>6.1f} {r['rss_base'] / mib:>6.0f} "
            f"{r['rss_peak'] / mib:>7.0f} {(image + accum) / mib:>7.0f} "
            f"{r['peak_minus_base_minus_buffers'] / mib:>13.0f} "
            f"{(traced / mib if traced is not None else math.nan):>10.1f} {accum / mib:>6.1f}",
            flush=True,
        )
    print(
        "  base = RSS with torch and the network loaded; buffers = input float32 + two "
        "accumulators; numpy peak = tracemalloc peak of a second run (accumulators + "
        "per-tile numpy temporaries)"
    )
    return {"tile": args.rss_tile, "overlap": args.rss_overlap, "runs": rows}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Measure seams and PSNR of tiled vs untiled MPRNet output, tiled vs untiled "
            "throughput, and peak RSS as images grow (CPU). See the module docstring."
        )
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="checkpoint (default: random derain)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights and noise")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo for seams/cost")
    parser.add_argument(
        "--crop",
        default="640x384+213+100",
        help="WxH+X+Y crop of --image for seams/erf ('' for the whole photo; default keeps "
        "the ladybird and the smooth bokeh, and the sweep within minutes on 2 cores)",
    )
    parser.add_argument("--sigma", type=float, default=25.0, help="noise sigma on the 0-255 scale")
    parser.add_argument(
        "--noisy-overlaps",
        nargs="*",
        type=int,
        default=None,
        help="overlaps for the noisy variant (default: same as --overlaps)",
    )
    parser.add_argument("--tiles", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--overlaps", nargs="+", type=int, default=[0, 16, 32, 64])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--cost-size", default="1024x768", help="WxH of the throughput image")
    parser.add_argument("--cost-repeats", type=int, default=1, help="timed runs per mode")
    parser.add_argument(
        "--rss-sizes",
        nargs="*",
        default=["2000x1500", "4000x3000", "8000x6000"],
        help="WxH images for the stand-in network",
    )
    parser.add_argument(
        "--rss-real-size", default="2000x1500", help="WxH for the real network ('' to skip)"
    )
    parser.add_argument("--rss-tile", type=int, default=512)
    parser.add_argument("--rss-overlap", type=int, default=32)
    parser.add_argument(
        "--standin-bytes-per-pixel",
        type=float,
        default=2765.0,
        help="stand-in per-tile memory; default: derain's peak RSS per pixel at a 512 tile",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--child-timeout", type=float, default=3600.0, help="seconds per RSS run")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        print(json.dumps(rss_child(json.loads(args.child))))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    label = weights_label(args.weights, args.seed)
    print(f"weights: {label}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "weights": label,
        "random_weights": args.weights is None,
        "image": str(args.image),
        "crop": args.crop,
        "host": host_info(),
        "measured_at": measured_at(),
    }
    needs_model = {"seams", "erf", "cost"} & set(args.sections)
    model = build_network(args.weights, args.seed) if needs_model else None
    full = read_image(args.image).rgb if needs_model else None
    photo = crop(full, args.crop) if full is not None else None
    timings: dict[str, float] = {}

    if "seams" in args.sections and model is not None and photo is not None:
        t0 = time.perf_counter()
        print(f"\n== seams: {args.image.name} crop {args.crop or 'none'} ==")
        doc["seams"] = run_seams(
            model, photo, args.tiles, args.overlaps, args.noisy_overlaps, args.sigma, args.seed
        )
        timings["seams"] = time.perf_counter() - t0
    if "erf" in args.sections and model is not None and photo is not None:
        t0 = time.perf_counter()
        print("\n== effective receptive field ==")
        doc["erf"] = run_erf(model, photo)
        timings["erf"] = time.perf_counter() - t0
    if "cost" in args.sections and model is not None and full is not None:
        t0 = time.perf_counter()
        print("\n== cost ==")
        doc["cost"] = run_cost(model, full, parse_size(args.cost_size), args.cost_repeats)
        timings["cost"] = time.perf_counter() - t0
    if "rss" in args.sections:
        t0 = time.perf_counter()
        print("\n== peak RSS of restore_array (fresh process per row) ==")
        doc["rss"] = run_rss(args)
        timings["rss"] = time.perf_counter() - t0

    doc["section_seconds"] = timings
    print(
        f"\n{time.perf_counter() - started:.0f} s total ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ")"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_finite(doc), indent=2, allow_nan=False)
        args.json.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become null (identical images: PSNR inf)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    raise SystemExit(main())
