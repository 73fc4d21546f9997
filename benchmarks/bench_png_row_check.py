"""What the truncated-PNG row check (`imageio.decode.png_rows_complete`) adds to decoding a PNG.

Why: `read_image` now inflates a PNG's IDAT stream once more before decoding, to refuse
files whose complete zlib stream holds fewer rows than the header declares (Pillow would
fill them with black). The extra inflate should be small next to the decode itself.

For each size it times, interleaved within one run (`--rounds` alternations, median),
the check alone and the whole `read_image`, and reports their ratio. Images are smooth
gradients plus noise, so they compress like photos rather than like white noise.

Run: python3 benchmarks/bench_png_row_check.py --sizes 1000x750 4000x3000 --rounds 5
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

from mprnet_cli import imageio as mio
from mprnet_cli.imageio.decode import png_rows_complete


def photo_like_png(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1000x750", "4000x3000"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        data = photo_like_png(width, height)
        check, decode = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            assert png_rows_complete(io.BytesIO(data))
            check.append(time.perf_counter() - start)
            start = time.perf_counter()
            mio.read_image(data, max_pixels=None)
            decode.append(time.perf_counter() - start)
        c, d = statistics.median(check), statistics.median(decode)
        print(
            f"{size}: {len(data) / 1e6:.1f} MB PNG; row check {c * 1000:.1f} ms, "
            f"read_image (check included) {d * 1000:.1f} ms: the check is {c / d:.0%} of it"
        )


if __name__ == "__main__":
    main()
