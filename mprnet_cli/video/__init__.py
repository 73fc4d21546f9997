"""Video in, video out: what a clip is, how it is written, and its job in a runner.

A clip is a source of frames and a sink of frames (`mprnet_cli.video.clip`, the only
module that imports PyAV); the tile loop and the backends do not change. This package's
top level needs no PyAV, so recognising a video by its name, the options and the runner's
per-clip job work (and fail with one line saying what to install) without it.

* Streams: the video is decoded, restored frame by frame and encoded again; audio,
  subtitle and data streams are copied packet for packet (never re-encoded) where the
  output container can hold them. Frame count, timestamps (variable frame rate too), time
  base, rotation, colour tags, the pixel format's family and container metadata are kept.
* Memory: decoding and encoding run on their own threads with queues of `QUEUE_FRAMES`
  frames each side, so a clip of any length holds a few frames, never the whole clip.
* Output: a hidden temporary file next to the target (the planner's stale-temp rules cover
  it), renamed into place when complete; Ctrl-C, SIGTERM or any failure removes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from mprnet_cli.errors import MprnetError, OutputExistsError, UsageError

if TYPE_CHECKING:
    from mprnet_cli.jobs import Callbacks, Job, RestorerLike, Result
    from mprnet_cli.locations import StorePath

#: Containers recognised as video inputs (case-insensitive), and written as outputs.
VIDEO_EXTENSIONS: Final = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
#: CRF-like quality: x264's scale (lower is better; 0 is lossless for H.264/H.265). 18 is
#: x264's "visually lossless" point, so the restored detail survives the re-encode.
DEFAULT_QUALITY: Final = 18
#: Frames waiting between decode and the network, and between the network and encode.
QUEUE_FRAMES: Final = 2
INSTALL_HINT: Final = "pip install 'mprnet-cli[video]'"

FrameFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
#: (frames done, frames expected or None when the container does not say)
FrameProgress = Callable[[int, int | None], None]


class VideoError(MprnetError):
    """A clip that cannot be read or written (no video stream, unknown codec, damage)."""


class _RunWideError(Exception):
    """Carries a run-wide error (loading the network) out of the clip, past its handlers."""

    def __init__(self, error: MprnetError) -> None:
        super().__init__(str(error))
        self.error = error


def is_video(path: PurePath | StorePath | str) -> bool:
    """A video by its name: one of `VIDEO_EXTENSIONS`."""
    name = path if isinstance(path, str) else path.name
    return PurePath(name).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoOptions:
    """How clips are written: `quality` CRF-like, `codec` None for the input's own."""

    quality: int = DEFAULT_QUALITY
    codec: str | None = None
    strict: bool = False  # a damaged packet fails the clip instead of being skipped
    deflicker: float = 0.0  # `Deflicker` strength; 0 off
    queue: int = QUEUE_FRAMES

    def __post_init__(self) -> None:
        if not 0 <= self.quality <= 63:
            raise UsageError(f"--video-quality must be 0-63 (CRF-like), got {self.quality}")
        if not 0.0 <= self.deflicker < 1.0:
            raise UsageError(f"--video-deflicker must be in [0, 1), got {self.deflicker}")
        if self.queue < 1:
            raise ValueError("queue must be >= 1")


#: Deflicker: pixels whose restored value moved more than this since the previous output
#: frame (any channel, 0-1 scale) are motion or a cut and are never blended. Restored
#: static footage changes by ~3-5 code values on average between frames (README: Video),
#: so its largest channel differences reach ~10-15; 24 covers them, while moving edges of
#: any visible contrast exceed it (low-contrast motion is blended partly: faint trails).
DEFLICKER_TOLERANCE: Final = 24 / 255


class Deflicker:
    """Frame-by-frame restoration flickers: each frame's leftovers differ. This pulls each
    restored frame towards the previous output by `strength`, per pixel, only where the
    two already agree within `tolerance` (the weight falls linearly to 0 at it), so a
    static scene is averaged over time (a recursive filter: independent flicker's
    variance shrinks by (1 - s) / (1 + s)) and motion is left alone. Cost: a few
    array operations per frame, no second network pass."""

    def __init__(self, strength: float, tolerance: float = DEFLICKER_TOLERANCE) -> None:
        self.strength = strength
        self.tolerance = tolerance
        self._previous: npt.NDArray[np.float32] | None = None

    def __call__(self, frame: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        previous = self._previous
        if self.strength <= 0 or previous is None or previous.shape != frame.shape:
            self._previous = frame
            return frame
        delta = previous - frame
        size = np.abs(delta)
        change = np.maximum(np.maximum(size[..., 0], size[..., 1]), size[..., 2])
        # weight = strength * clip(1 - change / tolerance, 0, 1), in place
        weight = np.float32(self.strength) - change * np.float32(self.strength / self.tolerance)
        np.maximum(weight, 0.0, out=weight)
        delta *= weight[..., None]
        out: npt.NDArray[np.float32] = frame + delta
        self._previous = out
        return out


@dataclass(frozen=True)
class ClipReport:
    """What happened to one clip (the runner turns it into a `Result`)."""

    frames: int
    width: int
    height: int
    codec: str
    notes: tuple[str, ...] = ()


def load_clip_module() -> Any:
    """`mprnet_cli.video.clip`, or a `UsageError` saying how to install PyAV."""
    try:
        from mprnet_cli.video import clip
    except ImportError as exc:
        if exc.name not in ("av", None) and not str(exc.name).startswith("av."):
            raise
        raise UsageError(f"reading and writing video needs PyAV: {INSTALL_HINT}") from None
    return clip


def restore_clip_job(
    job: Job,
    target: Path,
    restorer: Callable[[], RestorerLike],
    *,
    options: VideoOptions,
    overwrite: bool,
    callbacks: Callbacks,
) -> Result:
    """One clip end to end for the local runner: the job's `Result`, never an exception
    for a per-file problem (KeyboardInterrupt and run-wide errors propagate).

    `restorer` is called at most once, when the clip is known to be readable. Tiles are
    planned once from the clip's size (`clip_tiles`, when the restorer has it) and used
    for every frame, so each frame is cut the same way."""
    from mprnet_cli.jobs import Result, Status, failed, reason, restored

    assert isinstance(job.source, Path)
    if not is_video(target):
        return failed(
            job,
            f"a video is written as a video: name the output with one of "
            f"{', '.join(sorted(VIDEO_EXTENSIONS))}",
            target,
        )
    start = time.perf_counter()
    totals: dict[str, Any] = {"tiles": 0}
    warned: list[str] = []

    def frame_fn(width: int, height: int) -> FrameFn:
        try:
            loaded = restorer()
        except MprnetError as exc:  # weights, device: the whole run's problem, as for images
            raise _RunWideError(exc) from exc
        plan = getattr(loaded, "clip_tiles", None)
        tiles = plan(height, width) if plan is not None else None
        extra: dict[str, Any] = {} if tiles is None else {"tiles": tiles}
        if callbacks.started is not None:
            callbacks.started(job, width, height)
        steady = Deflicker(options.deflicker)

        def run(rgb: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            clean, stats = loaded.restore_rgb(rgb, warn=warned.append, **extra)
            totals["tiles"] += stats.tiles
            totals.update(device=stats.device, backend=stats.backend, precision=stats.precision)
            totals.setdefault("notes", stats.notes)
            return steady(clean)

        return run

    try:
        clip = load_clip_module()
        report: ClipReport = clip.restore_video(
            job.source,
            target,
            frame_fn,
            options=options,
            overwrite=overwrite,
            progress=callbacks.frames,
        )
    except _RunWideError as wrapped:
        raise wrapped.error from None
    except OutputExistsError:  # appeared while we wrote (another process): not ours
        return Result(job.label, str(target), Status.SKIPPED)
    except MprnetError as exc:
        return failed(job, reason(exc, job.display), target)
    return restored(
        job,
        target,
        (*report.notes, *dict.fromkeys(warned), *totals.get("notes", ())),
        seconds=time.perf_counter() - start,
        device=totals.get("device"),
        backend=totals.get("backend"),
        precision=totals.get("precision"),
        tiles=totals["tiles"],
        width=report.width,
        height=report.height,
    )
