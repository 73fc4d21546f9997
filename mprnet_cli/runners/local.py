"""The local engine: decode ahead, restore, encode behind, on this machine's threads.

No rich and no typer here (the CLI owns messages), and no torch at import time: a resumed
run whose outputs all exist never imports torch or loads weights. What the jobs are and the
rules each follows (names, skip, claims, stale temp files, records) live in
`mprnet_cli.jobs`, the per-image work in `mprnet_cli.runners.stages`, both shared with the
Ray engine.

The runner (`run`, `run_batch`)
-------------------------------
One thread decodes ahead (`prefetch` images) and one encodes and writes behind (`pending`
images) while the calling thread runs the network, so memory is bounded by a few images
whatever the batch size. Each result is reported (`Callbacks.finished`) by the thread that
settled it, the moment its output is written (or its failure known), in input order: the
writer thread settles every job, failures included, in turn. Callbacks never run two at a
time. The generator yields the same results, in the same order, as the calling thread
gets to them. Before an image is restored its output folder is created and test-written
(once per folder), so an unwritable `-o` fails each job without restore time. On
KeyboardInterrupt (SIGTERM included: `errors.Terminated`) the queues are cancelled, a write
already in progress finishes (writes are atomic: the output is complete or absent) and is
reported, so no output on disk goes unreported; temporary files left by a killed run are
removed when a later run reaches the same output, once they are `STALE_TEMP_SECONDS` old
(a younger one may be another mprnet process writing that output right now).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from mprnet_cli.errors import MprnetError, OutputError, UsageError, describe_os_error
from mprnet_cli.host.stdio import write_stdout
from mprnet_cli.imageio.formats import OUTPUT_EXTENSIONS_TEXT
from mprnet_cli.imageio.locations import StorePath
from mprnet_cli.jobs import (
    Callbacks,
    Destination,
    Job,
    Listing,
    OutputPlan,
    Planner,
    RestorerLike,
    Result,
    Target,
    failed,
    unexpected,
)
from mprnet_cli.runners import stages
from mprnet_cli.settings import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS
from mprnet_cli.video import VideoOptions, is_video, restore_clip_job

if TYPE_CHECKING:
    from mprnet_cli.runners.base import RunRequest

__all__ = ["run", "run_batch"]

T = TypeVar("T")


# --------------------------------------------------------------------------- runner


@dataclass
class _Prepared:
    """A job after the decode thread looked at it (`item` None: its output exists already)."""

    job: Job
    item: stages.Decoded | stages.Failed | None = None
    clip: bool = False  # a video: it streams through `_clip` on the main thread


class _Inline:
    """Executor stand-in that runs work at once: the sequential baseline (0 prefetch/pending)."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        return _run_now(fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _run_now(fn: Callable[..., T], /, *args: Any) -> Future[T]:
    fut: Future[T] = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as exc:
        fut.set_exception(exc)
    return fut


@dataclass
class _Runner:
    restorer: RestorerLike | Callable[[], RestorerLike]
    plan: OutputPlan
    overwrite: bool = False
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    prefetch: int = 1
    pending: int = 1
    callbacks: Callbacks = field(default_factory=Callbacks)
    stdin: BinaryIO | None = None
    stdout: BinaryIO | None = None
    raise_unexpected: bool = False
    video: VideoOptions = field(default_factory=VideoOptions)
    _loaded: RestorerLike | None = None
    _planner: Planner | None = None  # the run's claims and checks, made by `run`
    _lock: threading.Lock = field(default_factory=threading.Lock)  # one callback at a time

    # -- helpers
    def _get_restorer(self) -> RestorerLike:
        """Load weights at most once, and only when a job really needs the network."""
        if self._loaded is None:
            r = self.restorer
            self._loaded = r if hasattr(r, "restore_rgb") else r()
        return self._loaded

    @property
    def planner(self) -> Planner:
        assert self._planner is not None, "run() makes the planner"
        return self._planner

    @property
    def _bug(self) -> stages.Bug:
        return stages.raise_bugs if self.raise_unexpected else stages.report_bugs

    def _started(self, job: Job, width: int, height: int) -> None:
        if self.callbacks.started is not None:
            with self._lock:
                self.callbacks.started(job, width, height)

    def _tiles(self, done: int, total: int) -> None:
        if self.callbacks.tiles is not None:
            with self._lock:
                self.callbacks.tiles(done, total)

    def _frames(self, done: int, total: int | None) -> None:
        if self.callbacks.frames is not None:
            with self._lock:
                self.callbacks.frames(done, total)

    def _emit(self, result: Result) -> Result:
        """Report a settled result now (on the thread that settled it)."""
        if self.callbacks.finished is not None:
            with self._lock:
                self.callbacks.finished(result)
        return result

    # -- decode thread
    def _prepare(self, job: Job, *, predict: bool = True) -> _Prepared:
        if job.error is not None:
            return _Prepared(job, stages.Failed(job.error))
        if predict and self.planner.exists_ahead(job):
            return _Prepared(job)  # its predicted output exists: no decode was needed
        if _is_clip(job):
            return _Prepared(job, clip=True)
        if job.source is None:
            stream = self.stdin if self.stdin is not None else sys.stdin.buffer
            data: Path | bytes = stream.read()
        else:
            assert isinstance(job.source, Path)  # run_batch refuses object-store jobs
            data = job.source
        label = job.display if job.source is None else job.label
        return _Prepared(
            job, stages.decode(data, label, self.plan.format, self.max_pixels, bug=self._bug)
        )

    # -- main thread
    def _process(self, prepared: _Prepared, writer: ThreadPoolExecutor | _Inline) -> Future[Result]:
        """Restore one job and hand it to the writer, which settles every job in turn."""
        job, item = prepared.job, prepared.item
        if prepared.clip:
            return writer.submit(self._emit, self._clip(job))
        if item is None:  # not decoded (output predicted): settle the name with the usual checks
            predicted = self.plan.predict(job)
            if predicted is not None:
                verdict = self.planner.check(job, predicted)
                if verdict is not None:
                    return writer.submit(self._emit, verdict)
                self.planner.release(predicted)  # claimed again below, once resolved
            # The output vanished since the decode thread looked: decode after all.
            item = self._prepare(job, predict=False).item
            assert item is not None
        if isinstance(item, stages.Failed):
            return writer.submit(self._emit, failed(job, item.error))
        target = self.plan.target(job, item.fmt)
        width, height = item.size
        if isinstance(target, Path) and is_video(target):
            message = f"an image is written as an image: -o needs {OUTPUT_EXTENSIONS_TEXT}"
            return writer.submit(self._emit, failed(job, message, target))
        if isinstance(target, Path):
            verdict = self.planner.check(job, target)
            if verdict is None:
                problem = self.planner.folder_problem(target.parent)
                if problem is not None:
                    verdict = failed(job, problem, target)
            if verdict is not None:
                sized = dataclasses.replace(verdict, width=width, height=height)
                return writer.submit(self._emit, sized)
        restorer = self._get_restorer()
        self._started(job, width, height)
        done = stages.restore(restorer, item, progress=self._tiles, bug=self._bug)
        del item, prepared  # the decoded pixels go before the next restore
        return writer.submit(self._write, job, target, done)

    def _clip(self, job: Job) -> Result:
        """A video input: the usual checks on its output, then the clip end to end
        (`mprnet_cli.video`: its own decode and encode threads beside this one)."""
        target = self.plan.target(job, self.plan.format)
        if not isinstance(target, Path):
            return failed(job, "a video cannot be written to stdout; give -o FILE or -o DIR")
        verdict = self.planner.check(job, target)
        if verdict is not None:
            return verdict
        problem = self.planner.folder_problem(target.parent)
        if problem is not None:
            return failed(job, problem, target)
        try:
            return restore_clip_job(
                job,
                target,
                self._get_restorer,
                options=self.video,
                overwrite=self.overwrite,
                callbacks=Callbacks(started=self._started, frames=self._frames),
            )
        except MprnetError:
            raise  # run-wide (weights, device): as for images
        except Exception as exc:
            if self.raise_unexpected:
                raise
            return failed(job, unexpected(exc, "restoring the video"), target)

    # -- writer thread
    def _write(self, job: Job, target: Target, item: stages.Restored | stages.Failed) -> Result:
        if isinstance(target, Path):
            directory = self.plan.destination is Destination.DIRECTORY
            sink = stages.sink_for(target, overwrite=self.overwrite, make_folder=directory)
        else:

            def sink(data: bytes) -> None:
                _write_stdout(data, self.stdout)

        written = stages.write(item, sink, self.jpeg_quality, bug=self._bug)
        return self._emit(stages.record(job, target, written))

    # -- the loop
    def run(self, jobs: Sequence[Job] | Listing) -> Generator[Result, None, None]:
        self._planner = Planner(self.plan, jobs, overwrite=self.overwrite)
        decoder: ThreadPoolExecutor | _Inline = (
            ThreadPoolExecutor(1, thread_name_prefix="mprnet-decode")
            if self.prefetch
            else _Inline()
        )
        writer: ThreadPoolExecutor | _Inline = (
            ThreadPoolExecutor(1, thread_name_prefix="mprnet-encode") if self.pending else _Inline()
        )
        todo = iter(jobs)
        ahead: deque[Future[_Prepared]] = deque()
        outbox: deque[Future[Result]] = deque()

        def feed(limit: int) -> None:
            while len(ahead) < limit:
                job = next(todo, None)
                if job is None:
                    return
                # stdin is read on this thread, so Ctrl-C while waiting for it is prompt
                ahead.append(
                    _run_now(self._prepare, job)
                    if job.source is None and job.error is None
                    else decoder.submit(self._prepare, job)
                )

        def restoring(fut: Future[Result]) -> bool:
            return not fut.done()

        try:
            while True:
                feed(1)
                if not ahead:
                    break
                prepared = ahead.popleft().result()
                feed(self.prefetch)  # decode the next ones while this one is restored
                outbox.append(self._process(prepared, writer))
                del prepared  # drop the decoded pixels before the next restore
                while sum(map(restoring, outbox)) > self.pending:
                    next(f for f in outbox if not f.done()).exception()
                while outbox and outbox[0].done():
                    yield outbox.popleft().result()
            while outbox:
                yield outbox.popleft().result()
        finally:
            # Ctrl-C, SIGTERM, a closed generator or an error: queued work is dropped, and a
            # write in progress completes and reports itself before this returns.
            for pool in (decoder, writer):
                pool.shutdown(wait=True, cancel_futures=True)


def _is_clip(job: Job) -> bool:
    return job.error is None and isinstance(job.source, Path) and is_video(job.source)


def _write_stdout(data: bytes, stream: BinaryIO | None) -> None:
    try:
        write_stdout(data, stream)
    except BrokenPipeError:
        raise OutputError("stdout was closed before the image was written") from None
    except OSError as exc:
        raise OutputError(f"stdout: {describe_os_error(exc)}") from None


def run_batch(
    jobs: Sequence[Job] | Listing,
    restorer: RestorerLike | Callable[[], RestorerLike],
    plan: OutputPlan,
    *,
    overwrite: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    prefetch: int = 1,
    pending: int = 1,
    callbacks: Callbacks | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    raise_unexpected: bool = False,
    video: VideoOptions | None = None,
) -> Generator[Result, None, None]:
    """Restore `jobs`, yielding one `Result` per job in order.

    `jobs` may be a `Listing`: it is iterated as the images go, so the first one is
    restored while the folders are still being listed.

    `restorer` is a Restorer or a zero-argument factory, called once at the first job that
    needs the network (so a run whose outputs all exist loads no weights). `prefetch`
    decoded images wait ahead and `pending` restored images wait to be written (0 and 0:
    everything on the calling thread, the sequential baseline). `max_pixels` guards against
    decompression bombs (None: no limit). Per-file problems become
    failed results; errors that concern the whole run (weights, devices) propagate.
    `raise_unexpected` lets bugs raise instead of failing the file (MPRNET_DEBUG).
    Video inputs (`mprnet_cli.video.is_video`) are written as clips with `video`'s settings.

    A caller that may stop early (an error, Ctrl-C between results) should `close()` the
    generator (`contextlib.closing`): that stops the threads at once, dropping queued work
    and letting a write in progress finish, instead of whenever it is garbage-collected.
    """
    if prefetch < 0 or pending < 0:
        raise ValueError("prefetch and pending must be >= 0")
    stored = (
        jobs.uses_store
        if isinstance(jobs, Listing)
        else any(isinstance(j.source, StorePath) for j in jobs)
    )
    if isinstance(plan.path, StorePath) or stored:
        raise UsageError(
            "object-store URIs (s3://, gs://, abfs://) are read and written by --engine ray; "
            "add --engine ray"
        )
    runner = _Runner(
        restorer,
        plan,
        overwrite=overwrite,
        jpeg_quality=jpeg_quality,
        max_pixels=max_pixels,
        prefetch=prefetch,
        pending=pending,
        callbacks=callbacks or Callbacks(),
        stdin=stdin,
        stdout=stdout,
        raise_unexpected=raise_unexpected,
        video=video or VideoOptions(),
    )
    return runner.run(jobs)


def load_restorer(request: RunRequest) -> RestorerLike:
    """The request's network on this machine (threads set as its settings say)."""
    from mprnet_cli.api import load_restorer as load

    return load(request.task, request.settings, notify=request.notify, quiet=request.quiet)


def run(
    request: RunRequest, restorer: RestorerLike | Callable[[], RestorerLike] | None = None
) -> Generator[Result, None, None]:
    """The local engine behind the runner seam (`runners.base`): `run_batch` with the
    request's settings; the weights load at the first job that needs the network, unless
    a `restorer` (or its factory) is given: `--watch` keeps one between runs."""
    settings = request.settings
    return run_batch(
        request.jobs,
        restorer if restorer is not None else (lambda: load_restorer(request)),
        request.plan,
        overwrite=request.overwrite,
        jpeg_quality=settings.jpeg_quality,
        max_pixels=settings.max_pixels,
        callbacks=request.callbacks,
        stdin=request.stdin,
        stdout=request.stdout,
        raise_unexpected=request.raise_unexpected,
        video=VideoOptions.of(settings),
    )
