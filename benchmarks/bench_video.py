"""Video inputs: throughput against the same frames as PNGs, memory over a clip, flicker.

Why: a clip streams decode -> network -> encode on three threads (`mprnet_cli.video`). Its
cost beside the network is decoding and re-encoding the video, where a folder of frames
pays PNG decoding and encoding; this measures which is cheaper per frame, checks that
memory does not grow with the clip's length, and measures frame-to-frame flicker.

throughput: a synthetic `--size` clip (moving gradients + noise, H.264 CRF 18, AAC tone)
of `--frames` frames, and the same frames as PNGs in a folder. Each round restores the clip
(FFmpeg choosing its codec threads, and with one decoder and one encoder thread) and the
folder with `run_batch` (one network, loaded once; the order rotates between rounds) and the
script reports frames/s of each and their ratio, within one run. The network is the test
suite's tiny MPRNet by default (`--model tiny`): it makes the I/O, which is what differs
between the two paths, visible; with `full` the network dominates both alike. Memory:
resident memory (VmRSS) sampled at every 10% of the clip's frames, and the peak; flat
means the last samples are no higher than the first.

flicker: a static camera. The clean source is one still frame (smooth shapes and texture);
the input adds rain streaks that differ per frame (`eval --degrade rain`) or noise.
It reports the mean absolute difference between consecutive frames (0-255 scale) of the
clean source (0 for a still), the input, and the restored output without and with
`--video-deflicker` S, plus each one's PSNR against the clean frame, with the bundled
compact weights, and what the option costs per 1080p frame.

Run: python3 benchmarks/bench_video.py throughput --size 1920x1080 --frames 240 --rounds 1
     python3 benchmarks/bench_video.py flicker --task derain --frames 24
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from benchlib import host_info, measured_at, status_bytes
from PIL import Image

from mprnet_cli.api import Restorer
from mprnet_cli.jobs import Callbacks, Status, expand_inputs, plan_outputs
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.model.network import MPRNet
from mprnet_cli.runners.local import run_batch
from mprnet_cli.video import Deflicker, VideoOptions

KINDS = ("video", "video 1 codec thread", "pngs")
TINY = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, reduction=4)


def synthetic_frames(width: int, height: int, count: int) -> Any:
    """A panning gradient with fixed grain (computed once; each frame is a shifted view)."""
    rng = np.random.default_rng(0)
    pan = 4 * count
    yy, xx = np.mgrid[0:height, 0 : width + pan].astype(np.float32)
    base = np.stack([0.5 + 0.4 * np.sin(xx / 97 + yy / 61 + p) for p in (0.0, 2.0, 4.0)], axis=2)
    base += rng.normal(0, 0.03, base.shape).astype(np.float32)
    scene = (np.clip(base, 0, 1) * 255).round().astype(np.uint8)
    for i in range(count):
        yield np.ascontiguousarray(scene[:, 4 * i : 4 * i + width])


def write_clip(path: Path, frames: Any, rate: int = 24, audio: bool = True) -> None:
    out = av.open(str(path), "w")
    v = out.add_stream("h264", rate=rate)
    v.pix_fmt = "yuv420p"
    v.codec_context.options = {"crf": "18"}
    a = out.add_stream("aac", rate=48000) if audio else None
    n = 0
    for n, rgb in enumerate(frames):
        if n == 0:
            v.height, v.width = rgb.shape[:2]
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = n, Fraction(1, rate)
        out.mux(v.encode(frame))
    out.mux(v.encode(None))
    if a is not None:
        size, t0, end = a.codec_context.frame_size or 1024, 0, int(48000 * (n + 1) / rate)
        while t0 < end:
            t = (np.arange(size) + t0) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, t0, Fraction(1, 48000)
            out.mux(a.encode(af))
            t0 += size
        out.mux(a.encode(None))
    out.close()


def clip_to_pngs(clip: Path, folder: Path) -> int:
    folder.mkdir()
    with av.open(str(clip)) as c:
        n = 0
        for n, frame in enumerate(c.decode(video=0)):
            frame.to_image().save(folder / f"{n:05}.png", compress_level=6)
    return n + 1


def tiny_restorer(folder: Path, model: str, device: str = "cpu") -> Restorer:
    import torch

    torch.manual_seed(0)
    net = MPRNet(TINY if model == "tiny" else MPRNetConfig()).eval()
    path = folder / "net.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    return Restorer(weights=path, device=device, backend="torch", precision="fp32")


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = root / "clip.mp4"
        write_clip(clip, synthetic_frames(width, height, args.frames))
        kinds = tuple(k for k in KINDS if k in args.kinds)
        if "pngs" in kinds:
            count = clip_to_pngs(clip, root / "pngs")
        else:
            with av.open(str(clip)) as c:
                count = sum(1 for _ in c.decode(video=0))
        restorer = tiny_restorer(root, args.model, args.device)
        restorer.restore_rgb(np.zeros((64, 64, 3), np.float32))  # first-call setup
        seconds: dict[str, list[float]] = {k: [] for k in kinds}
        memory: dict[str, list[list[int]]] = {k: [] for k in kinds if k != "pngs"}
        for r in range(args.rounds):
            turn = r % len(kinds)
            for n, kind in enumerate(kinds[turn:] + kinds[:turn]):  # rotate the order
                out = root / f"out-{r}-{n}"
                source = str(root / "pngs" if kind == "pngs" else clip)
                expansion = expand_inputs([source], suffix="_r")
                plan = plan_outputs(expansion, str(out) + "/", suffix="_r")
                samples: list[int] = []
                step = max(1, count // 10)

                def frames(
                    done: int, total: int | None, samples: list[int] = samples, step: int = step
                ) -> None:
                    if done % step == 0 or done == total:
                        samples.append(status_bytes().get("VmRSS", 0))

                options = VideoOptions(codec_threads=1 if kind.endswith("thread") else 0)
                start = time.perf_counter()
                results = list(
                    run_batch(
                        expansion.jobs,
                        restorer,
                        plan,
                        callbacks=Callbacks(frames=frames),
                        video=options,
                    )
                )
                seconds[kind].append(time.perf_counter() - start)
                assert all(x.status is Status.OK for x in results), results[:1]
                if kind in memory:
                    memory[kind].append(samples)
        fps = {k: count / min(v) for k, v in seconds.items()}
        return {
            "benchmark": "video throughput",
            "measured_at": measured_at(),
            "host": host_info(),
            "size": args.size,
            "frames": count,
            "model": args.model,
            "device": args.device,
            "rounds": args.rounds,
            "seconds": seconds,
            "frames_per_s": {k: round(v, 3) for k, v in fps.items()},
            "over_pngs": {
                k: round(fps[k] / fps["pngs"], 3) for k in kinds if "pngs" in fps and k != "pngs"
            },
            "video_rss_mib_every_10pct": {
                k: [[round(b / 2**20) for b in s] for s in v] for k, v in memory.items()
            },
            "peak_rss_mib": round(status_bytes().get("VmHWM", 0) / 2**20),
        }


def flicker(args: argparse.Namespace) -> dict[str, Any]:
    from mprnet_cli.degradations.benchmark import parse_degradation

    rng = np.random.default_rng(1)
    h, w = args.height, args.width
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    clean = np.stack([0.45 + 0.3 * np.sin(9 * xx + 5 * yy + p) for p in (0, 1.5, 3)], axis=2)
    clean[h // 4 : h // 2, w // 4 : w // 2] = (0.8, 0.3, 0.2)  # an object with edges
    clean = np.clip(clean + rng.normal(0, 0.02, clean.shape), 0, 1).astype(np.float32)
    if args.task == "derain":  # our synthetic rain, new streaks on every frame
        rain = parse_degradation("rain:0:mixed")
        inputs = [rain(clean, i)[0] for i in range(args.frames)]
    else:  # sensor-like noise, new on every frame
        inputs = [
            np.clip(clean + rng.normal(0, 0.06, clean.shape), 0, 1).astype(np.float32)
            for _ in range(args.frames)
        ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = root / "static.mkv"
        write_clip(clip, ((x * 255).round().astype(np.uint8) for x in inputs), audio=False)
        restorer = Restorer(args.task, device="cpu", backend="torch", model="bundled")
        outputs: dict[str, list[Any]] = {}
        seconds: dict[str, float] = {}
        for s in (0.0, *args.deflicker):
            expansion = expand_inputs([str(clip)], suffix=f"_{s}")
            plan = plan_outputs(expansion, None, suffix=f"_{s}")
            start = time.perf_counter()
            (result,) = run_batch(expansion.jobs, restorer, plan, video=VideoOptions(deflicker=s))
            seconds[f"deflicker {s}"] = time.perf_counter() - start
            assert result.status is Status.OK, result.error
            with av.open(str(root / f"static_{s}.mkv")) as c:
                outputs[f"deflicker {s}"] = [
                    f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)
                ]
        with av.open(str(clip)) as c:
            seen = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]

    def mad(frames: list[Any]) -> float:
        return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(frames)]))

    def psnr(frames: list[Any]) -> float:
        ref = clean * 255
        return float(np.mean([10 * np.log10(255**2 / np.mean((f - ref) ** 2)) for f in frames]))

    return {
        "benchmark": "video flicker (static camera)",
        "measured_at": measured_at(),
        "task": args.task,
        "size": f"{w}x{h}",
        "frames": args.frames,
        "consecutive_mad_0_255": {
            "clean": 0.0,
            "input": mad(seen),
            **{k: mad(v) for k, v in outputs.items()},
        },
        "psnr_vs_clean_db": {"input": psnr(seen), **{k: psnr(v) for k, v in outputs.items()}},
        "clip_seconds": seconds,
        "deflicker_ms_per_1080p_frame": deflicker_cost(),
    }


def deflicker_cost() -> float:
    """The option's own cost: one `Deflicker` step on a 1920x1080 float frame."""
    rng = np.random.default_rng(0)
    frames = [rng.random((1080, 1920, 3), dtype=np.float32) * 0.02 + 0.5 for _ in range(2)]
    step = Deflicker(0.5)
    step(frames[0])
    start = time.perf_counter()
    for i in range(10):
        step(frames[i % 2])
    return round((time.perf_counter() - start) * 100, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--size", default="1920x1080")
    t.add_argument("--frames", type=int, default=240)
    t.add_argument("--rounds", type=int, default=1)
    t.add_argument("--model", choices=("tiny", "full"), default="tiny")
    t.add_argument("--device", default="cpu")
    t.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    f = sub.add_parser("flicker")
    f.add_argument("--task", default="derain")
    f.add_argument("--frames", type=int, default=24)
    f.add_argument("--width", type=int, default=256)
    f.add_argument("--height", type=int, default=160)
    f.add_argument("--deflicker", type=float, nargs="*", default=[0.5, 0.8])
    args = parser.parse_args()
    result = throughput(args) if args.what == "throughput" else flicker(args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    Image.init()
    main()
