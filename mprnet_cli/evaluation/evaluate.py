"""`mprnet eval`: PSNR/SSIM of a network on degraded/clean pairs, with the input's own score.

Pairs come either from two folders matched by file name, or from one folder of
clean images degraded on the fly with a fixed seed per image (`--degrade`).
Restored images are quantised to 8 bits before measuring, as the paper's saved
PNGs are; deraining is measured on the Y channel, the other tasks on RGB (see
`metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mprnet_cli.degradations.benchmark import Degradation
from mprnet_cli.errors import InputError, UsageError
from mprnet_cli.evaluation.metrics import measure
from mprnet_cli.imageio import list_images, read_image, to_uint8
from mprnet_cli.tasks import EvalChannel, Task

FloatImage = NDArray[np.float32]
RestoreFn = Callable[[FloatImage], FloatImage]


def y_channel_for(task: Task) -> bool:
    """Whether the task is measured on luma (its spec's `eval_channel`, the paper's protocol)."""
    return task.spec.eval_channel is EvalChannel.Y


@dataclass(frozen=True)
class PairResult:
    name: str
    width: int
    height: int
    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float
    seconds: float


@dataclass(frozen=True)
class EvalReport:
    task: Task
    protocol: str
    images: int
    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float
    seconds: float
    results: tuple[PairResult, ...]

    @property
    def gain(self) -> float:
        return self.psnr - self.input_psnr

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("results")
        data["task"] = self.task.value
        data["gain_db"] = self.gain
        return data


def _images(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in list_images(folder)}


def find_pairs(input_dir: Path, target_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, degraded, clean) for every file name present in both folders."""
    inputs, targets = _images(input_dir), _images(target_dir)
    names = sorted(set(inputs) & set(targets), key=_natural)
    if not names:
        raise InputError(f"no image names in common between {input_dir} and {target_dir}")
    return [(n, inputs[n], targets[n]) for n in names]


def _natural(name: str) -> tuple[Any, ...]:
    """1.png, 2.png, 10.png in that order (the sets are numbered)."""
    stem = Path(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def _quantise(x: FloatImage) -> FloatImage:
    """The 8-bit file the paper's protocol saves, back as float."""
    return to_uint8(x).astype(np.float32) / np.float32(255.0)


def _load(path: Path) -> FloatImage:
    image = read_image(path)
    return image.rgb


def iter_pairs(
    input_dir: Path,
    target_dir: Path | None,
    degradation: Degradation | None,
    *,
    seed: int = 0,
    limit: int | None = None,
) -> Iterator[tuple[str, FloatImage, FloatImage]]:
    """(name, degraded, clean) images, decoded as float32 RGB.

    Arguments and folders are checked now, before any weights are loaded;
    images are decoded lazily, one pair at a time.
    """
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    if degradation is None:
        if target_dir is None:
            raise UsageError(
                "give --target DIR with the clean images, or --degrade SPEC to degrade --input"
            )
        return _paired(find_pairs(input_dir, target_dir)[:limit])
    if target_dir is not None:
        raise UsageError("--degrade makes its own targets from --input; drop --target")
    names = sorted(_images(input_dir), key=_natural)[:limit]
    if not names:
        raise InputError(f"{input_dir}: no images")
    return _degraded(input_dir, names, degradation, seed)


def _paired(pairs: list[tuple[str, Path, Path]]) -> Iterator[tuple[str, FloatImage, FloatImage]]:
    for name, degraded_path, clean_path in pairs:
        degraded, clean = _load(degraded_path), _load(clean_path)
        if degraded.shape != clean.shape:
            raise InputError(f"{degraded_path} and {clean_path} differ in size")
        yield name, degraded, clean


def _degraded(
    folder: Path, names: list[str], degradation: Degradation, seed: int
) -> Iterator[tuple[str, FloatImage, FloatImage]]:
    for index, name in enumerate(names):
        degraded, target = degradation(_load(folder / name), seed + index)
        yield name, degraded, target


def evaluate(
    task: Task,
    restore: RestoreFn,
    pairs: Iterator[tuple[str, FloatImage, FloatImage]],
    *,
    on_result: Callable[[PairResult], None] | None = None,
) -> EvalReport:
    """Restore every degraded image and measure it and the input against the clean one."""
    y = y_channel_for(task)
    results: list[PairResult] = []
    start = time.perf_counter()
    for name, degraded, clean in pairs:
        t0 = time.perf_counter()
        restored = _quantise(restore(degraded))
        seconds = time.perf_counter() - t0
        target = _quantise(clean)
        p, s = measure(restored, target, y_channel=y)
        ip, is_ = measure(_quantise(degraded), target, y_channel=y)
        result = PairResult(name, clean.shape[1], clean.shape[0], p, s, ip, is_, seconds)
        results.append(result)
        if on_result is not None:
            on_result(result)
    if not results:
        raise InputError("nothing to evaluate")
    return EvalReport(
        task=task,
        protocol="Y (BT.601, MATLAB rgb2ycbcr)" if y else "RGB",
        images=len(results),
        psnr=float(np.mean([r.psnr for r in results])),
        ssim=float(np.mean([r.ssim for r in results])),
        input_psnr=float(np.mean([r.input_psnr for r in results])),
        input_ssim=float(np.mean([r.input_ssim for r in results])),
        seconds=time.perf_counter() - start,
        results=tuple(results),
    )
