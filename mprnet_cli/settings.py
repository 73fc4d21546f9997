"""Every restore option and its default, once: `RestoreSettings`.

The CLI builds one from its options (`cli.options.settings_options`), `api.Restorer` keeps
one (and pickles as it), the Ray engine ships it to its actors unchanged, and
`runners.ray.restore_dataset` takes one or keyword overrides of it. Frozen, validated on
construction (strings become the enums, bad values a `UsageError` naming the option) and
light: no torch, numpy or Pillow, so the CLI may build it before deciding whether any
work needs the network.

Adding an option: a field here (with its check in `__post_init__` if it has one), its
declaration in `cli.options.SETTINGS_OPTIONS`, and the code that reads it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mprnet_cli.choices import (
    DEFAULT_SPLIT_LINES,
    BackendChoice,
    Ensemble,
    ModelChoice,
    OutputFormat,
    Precision,
    SplitLines,
    device_spec,
    split_lines_choice,
)
from mprnet_cli.errors import UsageError

#: MPRNet down-samples three times: tile sides must be multiples of 2**3.
ALIGN: Final = 8
#: Overlap between tiles when none is given (the tile loop shrinks it for smaller tiles).
DEFAULT_OVERLAP: Final = 32
#: JPEG and WebP quality when none is given.
DEFAULT_JPEG_QUALITY: Final = 95
#: Images above this many pixels are refused (decompression bombs): 16384 x 16384 ~ 268 MP.
DEFAULT_MAX_PIXELS: Final = 16384 * 16384
#: CRF-like quality of re-encoded video: x264's "visually lossless" point.
DEFAULT_VIDEO_QUALITY: Final = 18
#: The largest --tile-overlap --tile auto takes: a quarter of its usual 512-px tile
#: (`pipeline.DEFAULT_TILE`, not imported here: it brings torch into a usage error).
AUTO_MAX_OVERLAP: Final = 128


def valid_tile(tile: int, align: int = ALIGN) -> bool:
    """The one tile-size rule (the CLI, `TileOptions` and the planner all ask here):
    0 for one pass, else a multiple of `align` and at least `align`."""
    return tile == 0 or (tile >= align and tile % align == 0)


def check_ensemble(value: Ensemble | int | str) -> Ensemble:
    """`value` (1, 2, 8, "2", Ensemble.MIRROR, ...) as an `Ensemble`, else a `UsageError`."""
    if isinstance(value, Ensemble):
        return value
    try:
        return Ensemble(str(value).strip())
    except ValueError:
        raise UsageError(f"--ensemble must be 1, 2 or 8, got {value!r}") from None


def check_strength(strength: float) -> float:
    """`strength` as a float in [0, 1], else a `UsageError` saying so."""
    value = float(strength)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise UsageError(
            f"--strength must be between 0 (input unchanged) and 1 (fully restored), got {strength}"
        )
    return value


def _choice(kind: type[Any], value: Any, flag: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(c.value) for c in kind)
        raise UsageError(f"{flag} must be one of {allowed}, got {value!r}") from None


def _at_least(value: int | None, low: int, flag: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise UsageError(f"{flag} must be a whole number of at least {low}, got {value!r}")


@dataclass(frozen=True)
class RestoreSettings:
    """How to restore: the network, its tiling, the quality knobs and the output encoding.

    Which task and which inputs are not settings; the weights file is one (None: the
    task's registry weights, chosen by `model`).
    """

    weights: Path | None = None  # a weights file; None: the task's, per `model`
    model: ModelChoice = ModelChoice.AUTO
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    precision: Precision = Precision.AUTO
    backend: BackendChoice = BackendChoice.AUTO
    tile: int | None = None  # None: from free memory, 0: one pass, else a multiple of 8
    tile_overlap: int | None = None  # None: DEFAULT_OVERLAP, shrunk for small tiles
    tile_batch: int = 1
    compile: bool = False
    strength: float = 1.0
    ensemble: Ensemble = Ensemble.OFF
    split_lines: SplitLines = DEFAULT_SPLIT_LINES  # keep, fix (thin re-run windows), hide
    threads: int | None = None  # CPU threads for the network; None: one per core
    tile_for_speed: bool = True  # False: tile only where memory demands (evaluation)
    format: OutputFormat = OutputFormat.SAME
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # None (or 0 given): no limit
    video_quality: int = DEFAULT_VIDEO_QUALITY  # CRF-like, x264's scale (0 lossless)
    video_codec: str | None = None  # None: the input's codec where an encoder exists
    video_strict: bool = False  # a damaged packet fails the clip instead of being skipped
    video_deflicker: float = 0.0  # blend with the previous output where still; 0 off

    def __post_init__(self) -> None:
        """Coerce the spellings users pass (strings, ints, PathLikes) and check each value."""
        set_ = object.__setattr__
        if self.weights is not None and not isinstance(self.weights, Path):
            set_(self, "weights", Path(os.fspath(self.weights)))
        set_(self, "model", _choice(ModelChoice, self.model, "--model"))
        set_(self, "precision", _choice(Precision, self.precision, "--precision"))
        set_(self, "backend", _choice(BackendChoice, self.backend, "--backend"))
        set_(self, "format", _choice(OutputFormat, self.format, "--format"))
        set_(self, "device", device_spec(self.device))
        set_(self, "ensemble", check_ensemble(self.ensemble))
        set_(self, "strength", check_strength(self.strength))
        set_(self, "split_lines", split_lines_choice(self.split_lines))
        if self.max_pixels == 0:
            set_(self, "max_pixels", None)
        _at_least(self.tile_batch, 1, "--tile-batch")
        _at_least(self.threads, 1, "--threads")
        _at_least(self.tile_overlap, 0, "--tile-overlap")
        _at_least(self.max_pixels, 1, "--max-pixels")
        if (
            isinstance(self.video_quality, bool)
            or not isinstance(self.video_quality, int)
            or not 0 <= self.video_quality <= 63
        ):
            raise UsageError(f"--video-quality must be 0-63 (CRF-like), got {self.video_quality!r}")
        deflicker = float(self.video_deflicker)
        if math.isnan(deflicker) or not 0.0 <= deflicker < 1.0:
            raise UsageError(f"--video-deflicker must be in [0, 1), got {self.video_deflicker!r}")
        set_(self, "video_deflicker", deflicker)
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise UsageError(f"--jpeg-quality must be between 1 and 100, got {self.jpeg_quality!r}")
        self._check_tiles()

    def _check_tiles(self) -> None:
        tile, overlap = self.tile, self.tile_overlap
        if tile is not None and (
            isinstance(tile, bool) or not isinstance(tile, int) or not valid_tile(tile)
        ):
            raise UsageError(
                f"--tile must be 0, auto or a multiple of {ALIGN} (at least {ALIGN}), got {tile!r}"
            )
        if tile and overlap is not None and overlap >= tile:
            raise UsageError(
                f"--tile-overlap {overlap} must be smaller than --tile {tile} "
                f"(e.g. --tile-overlap {min(DEFAULT_OVERLAP, tile // 4)})"
            )
        if tile is None and overlap is not None and overlap > AUTO_MAX_OVERLAP:
            # It was clamped silently to nearly the whole tile: hundreds of tiles, not a few.
            raise UsageError(
                f"--tile-overlap {overlap} is too big for --tile auto (at most "
                f"{AUTO_MAX_OVERLAP}, a quarter of a 512-px tile); for more, give --tile N "
                "larger than it"
            )

    @property
    def overlap(self) -> int:
        """The tile overlap to run with (the default when none was given)."""
        return DEFAULT_OVERLAP if self.tile_overlap is None else self.tile_overlap

    def replace(self, **changes: Any) -> RestoreSettings:
        """A copy with `changes` (field names), validated again; TypeError for unknown names."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown restore setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes) if changes else self


def settings_of(settings: RestoreSettings | None = None, **changes: Any) -> RestoreSettings:
    """`settings` (default: the defaults) with keyword overrides: what every API entry takes.

    `hide_split_lines=True` is the older spelling of `split_lines="hide"` (a clash with
    another `split_lines` is a `UsageError`); `split_lines=None` means the default.
    """
    if "hide_split_lines" in changes or changes.get("split_lines", "") is None:
        hide = bool(changes.pop("hide_split_lines", False))
        changes["split_lines"] = split_lines_choice(changes.get("split_lines"), hide)
    return (settings or RestoreSettings()).replace(**changes)
