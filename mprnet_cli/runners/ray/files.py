"""The Ray engine's file runner (`--engine ray` in the CLI): plan on the driver, stream
the pending jobs through the cluster, report one `Result` per job.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mprnet_cli.errors import UsageError
from mprnet_cli.imageio import temp_target
from mprnet_cli.imageio.formats import is_video
from mprnet_cli.imageio.locations import StorePath, Where, location
from mprnet_cli.jobs import (
    Callbacks,
    Destination,
    Job,
    Listing,
    OutputPlan,
    Planner,
    Result,
    Screened,
    Status,
)
from mprnet_cli.runners import RaySettings, stages
from mprnet_cli.runners.ray.cluster import (
    _connect,
    _dataset_of,
    _infer_stage,
    _payloads_of,
    _quiet_ray_data,
    _resources,
    _ship_weights,
    _stop,
)
from mprnet_cli.runners.ray.plan import (
    _CHUNK_BYTES,
    _CHUNK_IMAGES,
    _IO_CPUS,
    RestorerFactory,
    _WeightsCheck,
    cluster_plan,
    default_restorer,
)
from mprnet_cli.runners.ray.stages import (
    Planned,
    Retarget,
    _decode_chunk,
    _pack,
    _unpack,
    _write_chunk,
)
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.runners.base import RunRequest
    from mprnet_cli.weights import ResolvedWeights

# --------------------------------------------------------------------------- files (the CLI)


def run(request: RunRequest) -> Generator[Result, None, None]:
    """The Ray engine behind the runner seam (`runners.base`); weights resolved on the
    driver, once, and only when some job needs the network."""
    from mprnet_cli.weights import resolve

    settings = request.settings

    def weights() -> ResolvedWeights:
        return resolve(
            request.task,
            weights=settings.weights,
            model=settings.model,
            notify=request.notify,
            quiet=request.quiet,
        )

    return restore_files(
        request.jobs,
        request.plan,
        weights=weights,
        task=request.task,
        settings=settings,
        cluster=request.cluster,
        overwrite=request.overwrite,
        callbacks=request.callbacks,
    )


def restore_files(
    jobs: Sequence[Job] | Listing,
    plan: OutputPlan,
    *,
    weights: Callable[[], ResolvedWeights],
    task: Task | None = None,
    settings: RestoreSettings = RestoreSettings(),  # noqa: B008 - frozen
    cluster: RaySettings = RaySettings(),  # noqa: B008 - frozen
    overwrite: bool = False,
    callbacks: Callbacks | None = None,
    factory: RestorerFactory = default_restorer,
) -> Generator[Result, None, None]:
    """Restore `jobs` on Ray, yielding one `Result` per job as its output is written (any
    order; a chunk of small files reports together).

    `jobs` may be a `Listing`: the driver lists and screens it on a thread of its own while
    the cluster restores what is already planned (`_Feed`). `weights` resolves the weights
    file on the driver; it is called only when some job needs the network. The planner's
    verdicts (skipped, failed early) are reported as they come.
    """
    stdin = jobs.has_stdin if isinstance(jobs, Listing) else any(j.source is None for j in jobs)
    if plan.destination is Destination.STDOUT or stdin:
        raise UsageError(
            "--engine ray reads and writes files: stdin (-) and -o - need --engine local"
        )
    if settings.compile:
        raise UsageError("--compile is not supported with --engine ray yet; drop it")
    return _FileRun(
        jobs, plan, weights, task, settings, cluster, overwrite, callbacks or Callbacks(), factory
    ).run()


#: A chunk of pending jobs: packed for the cluster, and the planner's verdicts for the driver.
_Chunk = tuple[bytes, list[tuple[int, Screened]]]
#: Items the planning thread may hand over before it waits: the driver holds at most this
#: many verdicts or chunks (of up to `_CHUNK_IMAGES` inputs) that the cluster has not taken.
_QUEUED: Final = 64
#: A run's chunks go to the cluster in windows (one Ray Dataset each, one network actor pool):
#: a window closes at this many chunks, or when the listing pauses this long.
_WINDOW_CHUNKS: Final = 256
_GATHER_S: Final = 1.0


@dataclass(frozen=True)
class _Failed:
    """The planning thread stopped on an error: the driver raises it."""

    error: BaseException


class _Feed:
    """The planner on a thread of its own: lists and screens the jobs while the cluster
    works, handing verdicts and packed chunks over through a bounded queue, so the driver
    holds a bounded number of pending inputs whatever the listing's length."""

    def __init__(self, items: Iterator[Result | _Chunk]) -> None:
        self._queue: queue.Queue[Result | _Chunk | _Failed | None] = queue.Queue(_QUEUED)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(items,), name="mprnet-plan", daemon=True
        )
        self._thread.start()

    def _run(self, items: Iterator[Result | _Chunk]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the driver, which raises it
            self._put(_Failed(exc))
            return
        self._put(None)

    def _put(self, item: Result | _Chunk | _Failed | None) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return True
        return False

    def windows(self, first: Callable[[], None] | None = None) -> Iterator[Result | list[_Chunk]]:
        """The planner's verdicts as they come, and the chunks in windows: all that is
        planned when the listing pauses for `_GATHER_S` or ends, `_WINDOW_CHUNKS` at most.
        `first` runs when the first chunk comes (the cluster starts while the planner goes
        on listing)."""
        window: list[_Chunk] = []
        while True:
            try:
                item = self._queue.get(timeout=_GATHER_S if window else None)
            except queue.Empty:
                yield window
                window = []
                continue
            if item is None:
                if window:
                    yield window
                return
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, Result):
                yield item
                continue
            window.append(item)
            if first is not None:
                first()
                first = None
            if len(window) >= _WINDOW_CHUNKS:
                yield window
                window = []

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class _FileRun:
    jobs: Sequence[Job] | Listing
    plan: OutputPlan
    weights: Callable[[], ResolvedWeights]
    task: Task | None
    settings: RestoreSettings
    cluster: RaySettings
    overwrite: bool
    callbacks: Callbacks
    factory: RestorerFactory
    _pending: dict[int, Screened] = field(default_factory=dict)
    _chunks: list[bytes] = field(default_factory=list)
    _planner: Planner | None = None
    _retargeted: list[tuple[int, str]] = field(default_factory=list)
    _clips: list[Screened] = field(default_factory=list)  # videos: `ray.video`, by segments

    def _emit(self, result: Result) -> Result:
        if self.callbacks.finished is not None:
            self.callbacks.finished(result)
        return result

    def run(self) -> Generator[Result, None, None]:
        planner = self._planner = Planner(self.plan, self.jobs, overwrite=self.overwrite)
        # Names only: no input is read on the driver (`--format same` is settled by decoding)
        feed = _Feed(self._chunked(self._screened(planner)))
        ready: list[ResolvedWeights] = []
        started = stopped = False
        since = time.time()

        def start() -> None:  # at the first job that needs the network
            nonlocal started, since
            resolved = self.weights()
            with _WeightsCheck(resolved.path) as check:  # in a child process while Ray starts
                started = _connect(self.cluster.address)
                check.wait()
            ready.append(resolved)
            since = time.time()

        try:
            for item in feed.windows(start):
                if isinstance(item, Result):
                    yield self._emit(item)
                    continue
                self._take(item)
                yield from self._stream(ready[0], retarget=True)
            if self._clips:  # videos go by segments once the images are planned
                if not ready:
                    start()
                yield from self._stream_clips(ready[0])
            if self._retargeted:  # decoded as another format than their names said: again
                resolved = ready[0]
                window: list[_Chunk] = []
                for again in self._chunked(self._replanned()):
                    if isinstance(again, Result):
                        yield self._emit(again)
                    else:
                        window.append(again)
                if window:
                    self._take(window)
                    yield from self._stream(resolved, retarget=False)
        except BaseException:
            # Ctrl-C, SIGTERM, a closed generator or an error: stop the workers first, then
            # report the outputs they finished that the driver had not heard of yet.
            feed.close()
            _stop(started)
            stopped = True
            self._report_settled(since)
            raise
        finally:
            feed.close()
            if not stopped:
                _stop(started)
            self._sweep_unfinished()

    def _screened(self, planner: Planner) -> Iterator[tuple[int, Result | Screened]]:
        """The planner's verdict on each job, as the listing yields it (planning thread)."""
        for index, job in enumerate(self.jobs):
            yield index, planner.screen(job, sniff=False)

    def _report_settled(self, since: float) -> None:
        """Outputs on disk whose records never arrived get one (without timings), so no
        output goes unreported; quietly, as the run is unwinding."""
        for index, screened in list(self._pending.items()):
            target = screened.target
            if target is None:
                continue
            try:
                fresh = target.is_file() and (not self.overwrite or _mtime(target) >= since - 1)
            except OSError:
                fresh = False
            if fresh:
                del self._pending[index]
                with contextlib.suppress(Exception):  # a broken reporter must not mask the cause
                    self._emit(Result(screened.job.label, str(target), Status.OK))

    def _chunked(
        self, verdicts: Iterable[tuple[int, Result | Screened]]
    ) -> Iterator[Result | _Chunk]:
        """The planner's verdicts (skipped, failed early), and the jobs it let through in
        chunks."""
        chunker = _Chunker()
        for index, verdict in verdicts:
            if isinstance(verdict, Result):
                yield verdict
                continue
            if _is_clip(verdict):
                self._clips.append(verdict)  # restored by segments after the images
                continue
            full = chunker.add(index, verdict, _size(verdict.job.source))
            if full is not None:
                yield full
        last = chunker.take()
        if last is not None:
            yield last

    def _take(self, window: list[_Chunk]) -> None:
        """A window's chunks become the pending jobs the next `_stream` sends out."""
        for packed, screened in window:
            self._pending.update(screened)
            self._chunks.append(packed)

    def _stream_clips(self, resolved: ResolvedWeights) -> Iterator[Result]:
        from mprnet_cli.runners.ray.video import restore_clips

        clips, self._clips = self._clips, []
        yield from restore_clips(
            clips,
            resolved,
            plan_destination=self.plan.destination,
            task=self.task,
            settings=self.settings,
            cluster=self.cluster,
            overwrite=self.overwrite,
            callbacks=self.callbacks,
            factory=self.factory,
            emit=self._emit,
        )

    def _replanned(self) -> Iterator[tuple[int, Result | Screened]]:
        """The retargeted jobs, screened again under the names their decoding settled."""
        assert self._planner is not None
        # in input order: one folder after another, as the planner's claims were made
        retargeted, self._retargeted = sorted(self._retargeted), []
        for index, settled in retargeted:
            screened = self._pending.pop(index)
            if screened.target is not None:
                self._planner.release(screened.target)
            yield index, self._planner.screen_settled(screened.job, location(settled))

    def _stream(self, resolved: ResolvedWeights, *, retarget: bool) -> Iterator[Result]:
        _quiet_ray_data()
        cluster = cluster_plan(_resources(), self.cluster, self.settings.device)
        cwd = str(Path.cwd())
        chunks, self._chunks = self._chunks, []
        ds = _dataset_of(chunks)
        del chunks
        ds = ds.map(
            functools.partial(
                _decode_chunk,
                plan=self.plan,
                max_pixels=self.settings.max_pixels,
                cwd=cwd,
                retarget=retarget,
            ),
            num_cpus=_IO_CPUS,
        )
        ds = _infer_stage(
            ds, _ship_weights(resolved), self.task, self.settings, cluster, self.factory
        )
        ds = ds.map(
            functools.partial(
                _write_chunk,
                plan=self.plan,
                jpeg_quality=self.settings.jpeg_quality,
                overwrite=self.overwrite,
                cwd=cwd,
            ),
            num_cpus=_IO_CPUS,
        )
        for payload in _payloads_of(ds):
            written: list[tuple[int, stages.Written | Retarget]] = _unpack(payload)
            for index, outcome in written:
                if isinstance(outcome, Retarget):
                    if index in self._pending and (index, outcome.target) not in self._retargeted:
                        self._retargeted.append((index, outcome.target))
                    continue
                screened = self._pending.pop(index, None)
                if screened is None:
                    continue  # a retried task's second report of a finished job
                yield self._emit(stages.record(screened.job, screened.target, outcome))

    def _sweep_unfinished(self) -> None:
        """Remove the temporary files of writes that were cut short (Ctrl-C, an error).

        Runs after our workers are stopped; only the temp files of targets this run sent
        out and never heard back from are touched, whatever their age.
        """
        by_folder: dict[Path, set[str]] = {}
        for screened in self._pending.values():  # objects are written whole: no temp files
            if isinstance(screened.target, Path):
                by_folder.setdefault(screened.target.parent, set()).add(screened.target.name)
        for folder, names in by_folder.items():
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    if temp_target(entry.name) in names:
                        with contextlib.suppress(OSError):
                            Path(entry.path).unlink()


def _is_clip(screened: Screened) -> bool:
    source = screened.job.source
    return isinstance(source, Path) and is_video(source)


def _mtime(target: Where) -> float:
    """When `target` was last written (0 when an object store does not say)."""
    if isinstance(target, StorePath):
        return target.mtime() or 0.0
    return target.stat().st_mtime


def _planned(index: int, screened: Screened) -> Planned:
    job = screened.job
    return Planned(
        index,
        str(job.source),
        "" if job.root is None else str(job.root),
        "" if screened.target is None else str(screened.target),
    )


@dataclass
class _Chunker:
    """Groups pending jobs into chunks of about `_CHUNK_BYTES` of input files (at most
    `_CHUNK_IMAGES`), packed at once.

    The first chunks are small (1 image, then twice as many each time up to the limit), so
    the first records come after one image's trip through the stages, not a full chunk's,
    and the stages overlap from the start."""

    _items: list[tuple[int, Screened]] = field(default_factory=list)
    _bytes: int = 0
    _limit: int = 1

    def add(self, index: int, screened: Screened, size: int) -> _Chunk | None:
        """Add one job of `size` bytes; a full chunk when this one filled it."""
        self._items.append((index, screened))
        self._bytes += size
        if self._bytes >= _CHUNK_BYTES or len(self._items) >= self._limit:
            return self.take()
        return None

    def take(self) -> _Chunk | None:
        """The chunk so far, or None when empty; starts a new one."""
        if not self._items:
            return None
        items, self._items, self._bytes = self._items, [], 0
        self._limit = min(2 * self._limit, _CHUNK_IMAGES)
        return _pack([_planned(i, v) for i, v in items]), items


def _size(source: Where | None) -> int:
    """An input's size in bytes for chunking (an object, not asked: a nominal 1 MiB)."""
    if isinstance(source, StorePath):
        return 1 << 20
    if source is None:
        return 1
    try:
        return max(1, source.stat().st_size)
    except OSError:
        return 1
