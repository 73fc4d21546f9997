"""The Python API: a `Restorer` that scripts (and the CLI) use.

    >>> from mprnet_cli import Restorer
    >>> r = Restorer("derain", device="cpu")
    >>> clean = r.restore(rainy)          # numpy array or Pillow image, any size
    >>> s = RestoreSettings(device="cpu", strength=0.8)   # or the settings, as one value
    >>> r = Restorer("derain", settings=s)

Weights are loaded once per Restorer. A Restorer pickles as its settings and
reloads its weights on the other side, so it can be sent to worker processes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from mprnet_cli.backends import Backend, BackendSpec, create, descriptor
from mprnet_cli.choices import BackendChoice, Ensemble, Precision, SplitLines
from mprnet_cli.errors import UsageError
from mprnet_cli.host.device import check_precision, choose_precision, resolve_device, set_threads
from mprnet_cli.imageio import in_uint16_range, in_unit_range, to_uint8, to_uint16
from mprnet_cli.inference.pipeline import (
    Progress,
    RunStats,
    TileOptions,
    Warn,
    auto_tile,
    restore_array,
)
from mprnet_cli.inference.quality import apply_strength, self_ensemble
from mprnet_cli.inference.splitlines import restore_hiding_split_lines
from mprnet_cli.inference.tiling import round_up
from mprnet_cli.model.checkpoint import build_model, check_rgb, read_checkpoint
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.settings import RestoreSettings, settings_of
from mprnet_cli.tasks import Task
from mprnet_cli.weights import ResolvedWeights, Source, registry, resolve

ArrayT = TypeVar("ArrayT", bound=np.ndarray[Any, Any])


class Restorer:
    """Restore images with one MPRNet (published, bundled or from a file)."""

    def __init__(
        self,
        task: Task | str | None = None,
        weights: str | os.PathLike[str] | None = None,
        settings: RestoreSettings | None = None,
        *,
        notify: Callable[[str], None] | None = None,
        quiet: bool = False,
        **options: Any,
    ) -> None:
        """`settings` (default: `RestoreSettings()`) with `options` as keyword overrides of
        its fields (`device="cpu"`, `tile=0`, ...); `weights` overrides `settings.weights`.

        `tile_for_speed=False` tiles only where memory demands it (whole images when
        they fit), so results do not depend on the device's speed-minded tile choice:
        what evaluation protocols need."""
        if weights is not None:
            options["weights"] = weights
        self.settings: RestoreSettings = settings_of(settings, **options)
        try:
            self.task = Task(task) if task is not None else None
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        self._quiet = quiet
        s = self.settings
        self.ensemble = s.ensemble
        self.strength = s.strength
        self.split_lines = s.split_lines
        self.hide_split_lines = s.split_lines is SplitLines.HIDE
        self.options = TileOptions(tile=s.tile, overlap=s.overlap, batch=s.tile_batch)
        device = s.device
        if s.backend is not BackendChoice.AUTO:  # a named engine: its descriptor's rules
            named = descriptor(s.backend)
            if device == "auto":  # auto must not pick a GPU for an engine that runs on the CPU
                device = named.only_device() or device
            if device != "auto":  # checked before any weights are read
                named.check(device.split(":")[0], s.precision, compile=s.compile)
        self.device = resolve_device(device)
        self.precision = choose_precision(self.device, s.precision)
        check_precision(self.device, self.precision)
        self.resolved: ResolvedWeights = resolve(
            self.task, weights=s.weights, model=s.model, notify=notify, quiet=quiet
        )
        checkpoint = read_checkpoint(self.resolved.path)
        check_rgb(checkpoint)
        self.config: MPRNetConfig = checkpoint.config
        model = build_model(checkpoint)
        # fix: the network runs on its input uncut, so it draws no split lines at all.
        model.cut_input = s.split_lines is not SplitLines.FIX
        spec = BackendSpec(
            model,
            self.device,
            s.precision,
            memory=self._bytes_per_pixel,
            compile=s.compile,
        )
        self.backend: Backend = create(s.backend, spec, notify=None if quiet else notify)
        if not s.tile_for_speed:
            self.backend.ignore_speed_limits()

    def _bytes_per_pixel(self, device_type: str, precision: Precision) -> float:
        """Measured cost when this is a registry network on a measured device, else the
        estimate (`spec.memory` prices PyTorch passes: the registry's figures are PyTorch's)."""
        key = f"{device_type}_{precision.value}"
        if self.task is not None:
            spec = registry()[self.task].published
            if spec.config == self.config and key in spec.memory_bytes_per_pixel:
                return 1.1 * spec.memory_bytes_per_pixel[key]
        return descriptor(BackendChoice.TORCH).bytes_per_pixel(self.config, device_type, precision)

    # -- pickling: settings travel, weights are reloaded on the other side
    def __getstate__(self) -> dict[str, Any]:
        return {"task": self.task, "settings": self.settings, "quiet": self._quiet}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @property
    def source(self) -> Source:
        return self.resolved.source

    @property
    def weights_path(self) -> Path:
        return self.resolved.path

    def restore_rgb(
        self,
        rgb: NDArray[np.float32],
        *,
        progress: Progress | None = None,
        warn: Warn | None = None,
        strength: float | None = None,
        ensemble: Ensemble | None = None,
        tiles: TileOptions | None = None,
    ) -> tuple[NDArray[np.float32], RunStats]:
        """The core call: (H, W, 3) float32 in [0, 1] in, restored float32 and run stats out.

        Applies the ensemble (around the network), the split-line passes (around the
        tile loop) and the strength (on the result), each only when asked for.
        `strength` and `ensemble` override the Restorer's own for this call only (a
        service shares one network between requests that ask for different ones).
        `tiles` replaces this Restorer's tile options (a clip's plan, `clip_tiles`).
        """
        mode = self.ensemble if ensemble is None else ensemble
        forward = self_ensemble(self.backend, mode)
        run = _SPLIT_LINE_RUNS[self.split_lines]
        restored, stats = run(
            self.backend, rgb, tiles or self.options, forward=forward, progress=progress, warn=warn
        )
        return apply_strength(restored, rgb, self.strength if strength is None else strength), stats

    def clip_tiles(self, height: int, width: int) -> TileOptions:
        """The tile options for every frame of a height x width clip: `auto` resolved once
        (from free memory now), so all frames are cut alike and none re-plans."""
        if self.options.tile is not None:
            return self.options
        align = self.backend.capabilities.align
        tile = auto_tile(self.backend, round_up(height, align), round_up(width, align))
        return dataclasses.replace(self.options, tile=tile)

    @overload
    def restore(self, image: Image.Image) -> Image.Image: ...
    @overload
    def restore(self, image: ArrayT) -> ArrayT: ...

    def restore(
        self, image: Image.Image | np.ndarray[Any, Any]
    ) -> Image.Image | np.ndarray[Any, Any]:
        """Restore a Pillow image or numpy array and return the same kind.

        Arrays may be (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA, as uint8,
        uint16 or float in [0, 1]; alpha passes through untouched.
        """
        if isinstance(image, Image.Image):
            return _restore_pil(self, image)
        if isinstance(image, np.ndarray):
            return _restore_numpy(self, image)
        raise TypeError(f"restore() takes a numpy array or a PIL image, not {type(image).__name__}")


def load_restorer(
    task: Task | None,
    settings: RestoreSettings,
    *,
    notify: Callable[[str], None] | None = None,
    quiet: bool = False,
) -> Restorer:
    """A `Restorer` for a command or a runner: the process's CPU threads are set first, as
    `settings.threads` says (None: the load-aware default). `Restorer` itself leaves the
    process's threads alone, since a library call should not change them."""
    set_threads(settings.threads)
    return Restorer(task, settings=settings, notify=notify, quiet=quiet)


_SPLIT_LINE_RUNS = {
    SplitLines.KEEP: restore_array,
    SplitLines.FIX: restore_array,  # on the uncut network (`MPRNet.cut_input`)
    SplitLines.HIDE: restore_hiding_split_lines,
}


def _to_float(a: np.ndarray[Any, Any]) -> NDArray[np.float32]:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    raise TypeError(f"unsupported array dtype {a.dtype}: use uint8, uint16 or float in [0, 1]")


def _from_float(x: NDArray[np.float32], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    if dtype == np.uint8:
        return to_uint8(x)
    if dtype == np.uint16:
        return to_uint16(x)
    return x.astype(dtype)


def _restore_numpy(restorer: Restorer, a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if a.ndim == 2:
        rgb = np.repeat(_to_float(a)[:, :, None], 3, axis=2)
        out, _ = restorer.restore_rgb(rgb)
        return _from_float(out.mean(axis=2), a.dtype)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        out, _ = restorer.restore_rgb(_to_float(a[:, :, :3]))
        restored = _from_float(out, a.dtype)
        if a.shape[2] == 4:
            restored = np.concatenate([restored, a[:, :, 3:]], axis=2)
        return restored
    raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {a.shape}")


def _restore_pil(restorer: Restorer, image: Image.Image) -> Image.Image:
    """Same mode back for RGB(A), L(A), 16-bit gray (I;16*, I) and float gray (F).

    Modes without a restorable equivalent (1, P, CMYK, YCbCr, ...) come back
    as RGB, or RGBA when they carry transparency.
    """
    mode = image.mode
    if mode in ("RGB", "RGBA", "L"):
        return Image.fromarray(_restore_numpy(restorer, np.asarray(image)), mode=mode)
    if mode == "LA":
        a = np.asarray(image)
        gray = _restore_numpy(restorer, a[:, :, 0])
        return Image.fromarray(np.dstack([gray, a[:, :, 1]]), mode="LA")
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(image)
        if mode == "I" and not in_uint16_range(a):  # I;16 always fits
            raise UsageError(f"mode {mode} image has values outside 0..65535; cannot restore it")
        out = _restore_numpy(restorer, a.astype(np.uint16))
        return Image.fromarray(out.astype(np.int32) if mode == "I" else out)
    if mode == "F":
        a = np.asarray(image, dtype=np.float32)
        if not in_unit_range(a):
            raise UsageError("mode F image has values outside [0, 1] (HDR? NaN?); scale it first")
        return Image.fromarray(_restore_numpy(restorer, a), mode="F")
    has_alpha = "A" in mode or "transparency" in image.info
    return _restore_pil(restorer, image.convert("RGBA" if has_alpha else "RGB"))
