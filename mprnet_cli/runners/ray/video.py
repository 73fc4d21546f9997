"""Video inputs on the Ray engine: each clip cut at its keyframes into segments that
restore on different actors, joined losslessly on the driver.

* Plan (driver): `clip.plan_segments` demuxes the clip (no decoding) and cuts it at
  keyframes into `[start, end)` time ranges of at least `MIN_SEGMENT_FRAMES` frames; a
  clip with one keyframe interval is one segment.
* Restore (actors, `_SegmentNetwork`, the file runner's network actor with one more kind
  of payload): each segment is decoded from its keyframe, restored frame by frame with
  tiles planned once, and encoded by a fresh encoder set up exactly as the local engine's
  (so it starts with a keyframe); its packets travel back, not a file.
* Join (driver, `clip.join_segments`): the segments' packets in order, untouched (no
  re-encode), beside the input's audio, subtitle and data packets copied as the local
  engine copies them, into a temporary file renamed when complete. Frame count and
  timestamps equal the local engine's. The bytes do not (each segment's encoder starts
  its own GOP and rate control), and neither do lossy frames; with `--video-quality 0`
  (lossless) the decoded frames are identical (docs/video.md, Engines).
* `--video-deflicker` blends each frame with the one before it: it starts afresh at each
  segment's first frame.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mprnet_cli.errors import MprnetError
from mprnet_cli.jobs import Callbacks, Destination, Result, Screened, failed, reason
from mprnet_cli.runners import RaySettings
from mprnet_cli.runners.ray.cluster import (
    _dataset_of,
    _infer_stage,
    _Network,
    _payloads_of,
    _quiet_ray_data,
    _resources,
    _ship_weights,
)
from mprnet_cli.runners.ray.plan import RestorerFactory, cluster_plan
from mprnet_cli.runners.ray.stages import _in_folder, _pack, _unpack
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task
from mprnet_cli.video import (
    Segment,
    VideoOptions,
    clip_result,
    frame_restorer,
    load_clip_module,
    not_a_video_target,
)

if TYPE_CHECKING:
    from mprnet_cli.jobs import RestorerLike
    from mprnet_cli.weights import ResolvedWeights

#: A segment closes at the first keyframe after this many frames: fewer, longer segments
#: than keyframe intervals when keyframes are dense (all-intra codecs, 12-frame GOPs), so
#: each task pays its seek and encoder start for a dozen frames at least.
MIN_SEGMENT_FRAMES: Final = 12


@dataclass(frozen=True)
class SegmentJob:
    """One segment as it travels to an actor."""

    clip: int  # the clip's index in the run
    number: int  # the segment's place in its clip
    source: str
    start: int | None
    end: int | None
    muxer: str
    options: VideoOptions
    cwd: str


@dataclass(frozen=True)
class SegmentDone:
    """A segment as it comes back: its packets, or why it failed."""

    clip: int
    number: int
    segment: Segment | None
    error: str | None = None
    warned: tuple[str, ...] = ()
    totals: dict[str, Any] = field(default_factory=dict)


class _SegmentNetwork(_Network):
    """The file runner's network actor, also restoring `SegmentJob`s."""

    def _one(self, item: Any) -> Any:
        if isinstance(item, SegmentJob):
            return restore_segment_job(self.restorer, item)
        return super()._one(item)


def restore_segment_job(restorer: RestorerLike, job: SegmentJob) -> SegmentDone:
    """Restore one segment (on an actor); a clip's own problem is a failed segment."""
    warned: list[str] = []
    totals: dict[str, Any] = {}

    def frame_fn(width: int, height: int) -> Any:
        return frame_restorer(restorer, width, height, job.options, warned, totals)

    try:
        clip = load_clip_module()
        with _in_folder(job.cwd):
            segment = clip.restore_segment(
                Path(job.source),
                job.start,
                job.end,
                frame_fn,
                options=job.options,
                muxer=job.muxer,
            )
    except MprnetError as exc:
        return SegmentDone(job.clip, job.number, None, reason(exc, job.source))
    return SegmentDone(job.clip, job.number, segment, None, tuple(dict.fromkeys(warned)), totals)


@dataclass
class _ClipState:
    """A clip on the driver while its segments come back."""

    screened: Screened
    target: Path
    segments: int
    frames: int | None
    arrived: dict[int, Path] = field(default_factory=dict)
    done_frames: int = 0
    error: str | None = None
    warned: list[str] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=lambda: {"tiles": 0})
    began: float = field(default_factory=time.perf_counter)


def restore_clips(
    clips: list[Screened],
    resolved: ResolvedWeights,
    *,
    plan_destination: Destination,
    task: Task | None,
    settings: RestoreSettings,
    cluster: RaySettings,
    overwrite: bool,
    callbacks: Callbacks,
    factory: RestorerFactory,
    emit: Callable[[Result], Result],
) -> Iterator[Result]:
    """Restore the pending `clips` (screened by the planner) on the Ray actors, segment by
    segment; one `Result` per clip, each as its last segment arrives and it is joined."""
    options = VideoOptions.of(settings)
    states: dict[int, _ClipState] = {}
    jobs: list[bytes] = []
    cwd = str(Path.cwd())
    try:
        clip = load_clip_module()
    except MprnetError as exc:
        for screened in clips:
            yield emit(failed(screened.job, reason(exc, screened.job.label), screened.target))
        return
    for index, screened in enumerate(clips):
        job, target = screened.job, screened.target
        wrong = not_a_video_target(job, target)
        if wrong is not None:
            yield emit(wrong)
            continue
        assert isinstance(target, Path)
        try:
            muxer = clip.MUXERS[target.suffix.lower()]  # every video extension has one
            assert isinstance(job.source, Path)
            bounds, frames = clip.plan_segments(job.source, MIN_SEGMENT_FRAMES)
        except MprnetError as exc:
            yield emit(failed(job, reason(exc, job.label), target))
            continue
        states[index] = _ClipState(screened, target, len(bounds), frames)
        for number, (start, end) in enumerate(bounds):
            jobs.append(
                _pack(SegmentJob(index, number, str(job.source), start, end, muxer, options, cwd))
            )
    if not jobs:
        return
    with tempfile.TemporaryDirectory(prefix="mprnet-segments-") as folder:
        _quiet_ray_data()
        plan = cluster_plan(_resources(), cluster, settings.device)
        ds = _infer_stage(
            _dataset_of(jobs),
            _ship_weights(resolved),
            task,
            settings,
            plan,
            factory,
            actor=_SegmentNetwork,
        )
        for payload in _payloads_of(ds):
            done: SegmentDone = _unpack(payload)
            state = states.get(done.clip)
            if state is None or done.number in state.arrived:
                continue  # a retried task's second report
            kept = Path(folder) / f"{done.clip}-{done.number}.segment"
            _keep(state, done, kept, callbacks)
            if len(state.arrived) == state.segments:
                del states[done.clip]
                yield emit(_join(clip, state, options, overwrite, plan_destination))


def _keep(state: _ClipState, done: SegmentDone, kept: Path, callbacks: Callbacks) -> None:
    """Set a returned segment aside on disk (the driver holds one segment at a time)."""
    state.arrived[done.number] = kept
    if done.segment is None:
        state.error = state.error or done.error
        return
    kept.write_bytes(pickle.dumps(done.segment, protocol=pickle.HIGHEST_PROTOCOL))
    state.warned.extend(done.warned)
    state.totals["tiles"] += done.totals.get("tiles", 0)
    for key in ("device", "backend", "precision", "notes"):
        if key in done.totals:
            state.totals.setdefault(key, done.totals[key])
    if state.done_frames == 0 and callbacks.started is not None:
        callbacks.started(state.screened.job, done.segment.width, done.segment.height)
    state.done_frames += done.segment.frames
    if callbacks.frames is not None:
        callbacks.frames(state.done_frames, state.frames)


def _join(
    clip: Any, state: _ClipState, options: VideoOptions, overwrite: bool, where: Destination
) -> Result:
    job, target = state.screened.job, state.target

    def segments() -> Iterator[Segment]:
        for number in range(state.segments):
            kept = state.arrived[number]
            segment: Segment = pickle.loads(kept.read_bytes())
            kept.unlink()
            yield segment

    if state.error is not None:
        return failed(job, state.error, target)
    try:
        if where is Destination.DIRECTORY:
            target.parent.mkdir(parents=True, exist_ok=True)
        assert isinstance(job.source, Path)
        report = clip.join_segments(
            job.source, target, segments(), options=options, overwrite=overwrite
        )
    except MprnetError as exc:
        return failed(job, reason(exc, job.label), target)
    except OSError as exc:
        return failed(job, f"cannot write {target} ({exc.strerror or exc})", target)
    seconds = time.perf_counter() - state.began
    return clip_result(job, target, report, state.warned, state.totals, seconds)
