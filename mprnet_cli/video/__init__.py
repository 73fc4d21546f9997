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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mprnet_cli.errors import MprnetError, OutputExistsError, UsageError
from mprnet_cli.imageio.formats import VIDEO_EXTENSIONS as VIDEO_EXTENSIONS
from mprnet_cli.imageio.formats import VIDEO_EXTENSIONS_TEXT
from mprnet_cli.imageio.formats import is_video as is_video
from mprnet_cli.video.base import (  # the package's public names
    DEFAULT_QUALITY as DEFAULT_QUALITY,
)
from mprnet_cli.video.base import (
    DEFLICKER_TOLERANCE as DEFLICKER_TOLERANCE,
)
from mprnet_cli.video.base import (
    INSTALL_HINT as INSTALL_HINT,
)
from mprnet_cli.video.base import (
    QUEUE_FRAMES as QUEUE_FRAMES,
)
from mprnet_cli.video.base import (
    ClipReport as ClipReport,
)
from mprnet_cli.video.base import (
    Deflicker as Deflicker,
)
from mprnet_cli.video.base import (
    FrameFn as FrameFn,
)
from mprnet_cli.video.base import (
    FrameProgress as FrameProgress,
)
from mprnet_cli.video.base import (
    Segment as Segment,
)
from mprnet_cli.video.base import (
    VideoError as VideoError,
)
from mprnet_cli.video.base import (
    VideoOptions as VideoOptions,
)

if TYPE_CHECKING:
    from mprnet_cli.jobs import Callbacks, Job, RestorerLike, Result, Target


class _RunWideError(Exception):
    """Carries a run-wide error (loading the network) out of the clip, past its handlers."""

    def __init__(self, error: MprnetError) -> None:
        super().__init__(str(error))
        self.error = error


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
    from mprnet_cli.jobs import Result, Status, failed, reason

    assert isinstance(job.source, Path)
    wrong = not_a_video_target(job, target)
    if wrong is not None:
        return wrong
    start = time.perf_counter()
    totals: dict[str, Any] = {"tiles": 0}
    warned: list[str] = []

    def frame_fn(width: int, height: int) -> FrameFn:
        try:
            loaded = restorer()
        except MprnetError as exc:  # weights, device: the whole run's problem, as for images
            raise _RunWideError(exc) from exc
        if callbacks.started is not None:
            callbacks.started(job, width, height)
        return frame_restorer(loaded, width, height, options, warned, totals)

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
    return clip_result(job, target, report, warned, totals, time.perf_counter() - start)


def not_a_video_target(job: Job, target: Target | None) -> Result | None:
    """A clip's failed record when its output is not named as a video (both engines)."""
    from mprnet_cli.jobs import failed

    if isinstance(target, Path) and is_video(target):  # a local file: PyAV writes it
        return None
    return failed(
        job,
        f"a video is written as a video: name the output with one of {VIDEO_EXTENSIONS_TEXT}",
        target,
    )


def clip_result(
    job: Job,
    target: Path,
    report: ClipReport,
    warned: list[str],
    totals: dict[str, Any],
    seconds: float,
) -> Result:
    """The `Result` of a restored clip, from its report and `frame_restorer`'s figures."""
    from mprnet_cli.jobs import restored

    return restored(
        job,
        target,
        (*report.notes, *dict.fromkeys(warned), *totals.get("notes", ())),
        seconds=seconds,
        device=totals.get("device"),
        backend=totals.get("backend"),
        precision=totals.get("precision"),
        tiles=totals.get("tiles", 0),
        width=report.width,
        height=report.height,
    )


def frame_restorer(
    loaded: RestorerLike,
    width: int,
    height: int,
    options: VideoOptions,
    warned: list[str],
    totals: dict[str, Any],
) -> FrameFn:
    """The per-frame restore of a `width` x `height` clip (or segment): tiles planned once
    (`clip_tiles`, when the restorer has it) and used for every frame, so each frame is cut
    the same way, then `Deflicker`; warnings go to `warned`, the run's figures (tiles,
    device, backend, precision, notes) to `totals`."""
    plan = getattr(loaded, "clip_tiles", None)
    tiles = plan(height, width) if plan is not None else None
    extra: dict[str, Any] = {} if tiles is None else {"tiles": tiles}
    steady = Deflicker(options.deflicker)
    totals.setdefault("tiles", 0)

    def run(rgb: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        clean, stats = loaded.restore_rgb(rgb, warn=warned.append, **extra)
        totals["tiles"] += stats.tiles
        totals.update(device=stats.device, backend=stats.backend, precision=stats.precision)
        totals.setdefault("notes", stats.notes)
        return steady(clean)

    return run
