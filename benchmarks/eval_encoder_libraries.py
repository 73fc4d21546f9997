"""Could a library replace our 16-bit PNG / TIFF writers? The evidence behind encode.py's notes.

Checks, with the candidates installed outside the project (they are not dependencies):
whether `tifffile` writes the EXIF and GPS sub-IFD pointers our TIFF output carries, and
how the candidates compare with our writers in time and size on a photo-like 16-bit image
(rounds interleaved; medians).

    pip install --target /tmp/enc_eval tifffile pypng   # then remove /tmp/enc_eval/numpy*
    PYTHONPATH=.:/tmp/enc_eval python3 benchmarks/eval_encoder_libraries.py
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable

import numpy as np

from mprnet_cli.imageio.encode import png_paeth_zlib, tiff_bytes

try:
    import png  # pypng
    import tifffile
except ImportError as exc:
    raise SystemExit(f"{exc.name} is not installed; see this script's docstring") from None


def photo_like(h: int, w: int, channels: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    ramps = [x * 65535 / w, y * 65535 / h, (x + y) * 32767 / (w + h), 65535 - x * 65535 / w]
    noise = np.random.default_rng(0).normal(0, 300, (h, w, channels))
    return np.clip(np.stack(ramps[:channels], -1) + noise, 0, 65535).astype(np.uint16)


def tifffile_refuses(tag: int) -> bool:
    """tifffile logs "not writing extratag N" (no exception) for sub-IFD pointers."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("tifffile").addHandler(handler)
    try:
        pixels = np.zeros((4, 4, 3), np.uint16)
        tifffile.imwrite(io.BytesIO(), pixels, photometric="rgb", extratags=[(tag, 4, 1, 0, True)])
    finally:
        logging.getLogger("tifffile").removeHandler(handler)
    return any(f"extratag {tag}" in m for m in seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2000x1500")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    print(f"tifffile {tifffile.__version__}, pypng {png.__version__}")
    for tag, what in ((34665, "EXIF"), (34853, "GPS")):
        print(f"tifffile writes the {what} sub-IFD pointer ({tag}): {not tifffile_refuses(tag)}")
    la, rgba = photo_like(h, w, 2), photo_like(h, w, 4)

    def pypng_la() -> bytes:
        out = io.BytesIO()
        png.Writer(w, h, greyscale=True, alpha=True, bitdepth=16).write(out, la.reshape(h, -1))
        return out.getvalue()

    def tifffile_rgba() -> bytes:
        out = io.BytesIO()
        tifffile.imwrite(
            out, rgba, photometric="rgb", extrasamples=["unassalpha"],
            compression="zlib", predictor=True,
        )  # fmt: skip
        return out.getvalue()

    cases: dict[str, Callable[[], bytes]] = {
        "16-bit LA PNG IDAT, pypng": pypng_la,
        "16-bit LA PNG IDAT, ours": lambda: png_paeth_zlib(la),
        "16-bit RGBA TIFF, tifffile": tifffile_rgba,
        "16-bit RGBA TIFF, ours": lambda: tiff_bytes(rgba, icc=None, exif=None, dpi=None),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    sizes: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, encode in cases.items():
            start = time.perf_counter()
            sizes[name] = len(encode())
            times[name].append(time.perf_counter() - start)
    print(f"{w}x{h}, median of {args.rounds} interleaved rounds:")
    for name, seconds in times.items():
        print(
            f"  {name:28s} {sorted(seconds)[len(seconds) // 2]:.2f} s  {sizes[name] / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
