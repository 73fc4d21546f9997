"""OpenCV's non-local means as a denoising baseline, at its best setting, with `mprnet eval`'s protocol.

The noisy images are made exactly as `mprnet eval --degrade noise:25` makes
them (Gaussian sigma 25/255, seed = base seed + image index, clipped and
quantised to 8 bits), and measured with the same PSNR/SSIM on RGB. The filter
strength h (= hColor) is swept and the best mean PSNR per set is reported: the
baseline gets its best shot, tuned on the test images themselves.

    python3 benchmarks/eval_opencv_nlm.py ../shared/testdata/Kodak24/clean ... --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from mprnet_cli.degradations.benchmark import parse_degradation
from mprnet_cli.evaluation.evaluate import iter_pairs
from mprnet_cli.evaluation.metrics import measure
from mprnet_cli.imageio import to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--sigma", type=float, default=25)
    parser.add_argument("--strengths", default="9,11,13,15,17,19")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    degrade = parse_degradation(f"noise:{args.sigma:g}")
    strengths = [float(v) for v in args.strengths.split(",")]
    report = {}
    for folder in args.folders:
        scores: dict[float, list[tuple[float, float]]] = {h: [] for h in strengths}
        started = time.perf_counter()
        # The same images, noise and seeds as `mprnet eval --degrade noise:SIGMA`.
        for _, noisy, clean in iter_pairs(folder, None, degrade, seed=args.seed):
            target = to_uint8(clean).astype(np.float32) / 255
            bgr = cv2.cvtColor(to_uint8(noisy), cv2.COLOR_RGB2BGR)
            for h in strengths:
                out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)
                rgb = cv2.cvtColor(out, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
                scores[h].append(measure(rgb, target, y_channel=False))
        means = {
            h: (float(np.mean([p for p, _ in v])), float(np.mean([s for _, s in v])))
            for h, v in scores.items()
        }
        best = max(means, key=lambda h: means[h][0])
        report[str(folder)] = {
            "images": len(scores[strengths[0]]),
            "best_h": best,
            "psnr": means[best][0],
            "ssim": means[best][1],
            "by_h": {str(h): {"psnr": p, "ssim": s} for h, (p, s) in means.items()},
            "seconds": time.perf_counter() - started,
        }
        print(
            f"{folder}: best h={best:g}: {means[best][0]:.2f} dB / {means[best][1]:.4f}", flush=True
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
