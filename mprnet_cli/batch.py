"""The threaded local runner: decode ahead, restore, encode behind, over `mprnet_cli.jobs`.

No rich and no typer here (the CLI owns messages), and no torch at import time: a resumed
run whose outputs all exist never imports torch or loads weights. What the jobs are and the
rules each follows (names, skip, claims, stale temp files, records) live in
`mprnet_cli.jobs`, shared with the Ray runner; the names are re-exported here.

The runner (`run_batch`)
------------------------
One thread decodes ahead (`prefetch` images) and one encodes and writes behind (`pending`
images) while the calling thread runs the network, so memory is bounded by a few images
whatever the batch size. Results come back in input order. Before an image is restored its
output folder is created and test-written (once per folder), so an unwritable `-o` fails
each job without restore time. On KeyboardInterrupt (SIGTERM included: `errors.Terminated`)
the queues are cancelled, a write already in progress finishes (writes are atomic: the
output is complete or absent), and every result settled by then still reaches
`Callbacks.finished`, so no output on disk goes unreported; temporary files left by a killed run are removed when a later run
reaches the same output, once they are `STALE_TEMP_SECONDS` old (a younger one may be
another mprnet process writing that output right now).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import numpy.typing as npt

from mprnet_cli._stdio import write_stdout
from mprnet_cli.errors import (
    MprnetError,
    OutputError,
    OutputExistsError,
    UsageError,
    describe_os_error,
)
from mprnet_cli.imageio import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageInfo,
    OutputFormat,
    UIntArray,
    encode_image,
    read_image,
    write_image,
)
from mprnet_cli.jobs import (
    IMAGE_EXTENSIONS,
    JSON_FIELDS,
    STALE_TEMP_SECONDS,
    STDOUT,
    Callbacks,
    Destination,
    Expansion,
    Job,
    OutputPlan,
    Planner,
    RestorerLike,
    Result,
    Status,
    Target,
    expand_inputs,
    failed,
    failed_at_write,
    image_notes,
    make_output_folder,
    output_name,
    plan_outputs,
    reason,
    restored,
    skipped_at_write,
    unexpected,
)
from mprnet_cli.locations import StorePath
from mprnet_cli.video import VideoOptions, is_video, restore_clip_job

__all__ = [
    "IMAGE_EXTENSIONS",
    "JSON_FIELDS",
    "STALE_TEMP_SECONDS",
    "STDOUT",
    "Callbacks",
    "Destination",
    "Expansion",
    "Job",
    "OutputPlan",
    "RestorerLike",
    "Result",
    "Status",
    "expand_inputs",
    "output_name",
    "plan_outputs",
    "run_batch",
]

T = TypeVar("T")


# --------------------------------------------------------------------------- runner


@dataclass
class _Prepared:
    """A job after the decode thread looked at it."""

    job: Job
    decoded: DecodedImage | None = None
    error: str | None = None
    seconds: float = 0.0


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


def _done(result: Result) -> Future[Result]:
    fut: Future[Result] = Future()
    fut.set_result(result)
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

    def _unexpected(self, exc: Exception, what: str) -> str:
        if self.raise_unexpected:
            raise exc
        return unexpected(exc, what)

    # -- decode thread
    def _prepare(self, job: Job, *, predict: bool = True) -> _Prepared:
        if job.error is not None:
            return _Prepared(job, error=job.error)
        start = time.perf_counter()
        if predict and self.planner.exists_ahead(job):
            return _Prepared(job)  # its predicted output exists: no decode was needed
        if _is_clip(job):
            return _Prepared(job)  # a clip streams through `_clip` on the main thread
        try:
            decoded = self._decode(job)
        except MprnetError as exc:
            return _Prepared(job, error=reason(exc, job.display))
        except Exception as exc:
            return _Prepared(job, error=self._unexpected(exc, "decoding"))
        return _Prepared(job, decoded=decoded, seconds=time.perf_counter() - start)

    def _decode(self, job: Job) -> DecodedImage:
        if job.source is None:
            stream = self.stdin if self.stdin is not None else sys.stdin.buffer
            return read_image(stream.read(), name=job.display, max_pixels=self.max_pixels)
        assert isinstance(job.source, Path)  # run_batch refuses object-store jobs
        return read_image(job.source, name=job.label, max_pixels=self.max_pixels)

    # -- main thread
    def _process(
        self, prepared: _Prepared, encoder: ThreadPoolExecutor | _Inline
    ) -> Future[Result]:
        job = prepared.job
        if prepared.error is not None:
            return _done(failed(job, prepared.error))
        if _is_clip(job):
            return _done(self._clip(job))
        decoded = prepared.decoded
        if decoded is None:  # not decoded (output predicted): settle the name with the usual checks
            predicted = self.plan.predict(job)
            if predicted is not None:
                verdict = self.planner.check(job, predicted)
                if verdict is not None:
                    return _done(verdict)
                self.planner.release(predicted)  # claimed again below, once resolved
            # The output vanished since the decode thread looked: decode after all.
            prepared = self._prepare(job, predict=False)
            if prepared.decoded is None:
                return _done(failed(job, prepared.error or "cannot decode"))
            decoded = prepared.decoded
        target, fmt = self.plan.resolve(job, decoded.info)
        width, height = decoded.width, decoded.height
        if isinstance(target, Path) and is_video(target):
            return _done(
                failed(
                    job,
                    "an image is written as an image: -o needs .png, .jpg, .webp or .tif",
                    target,
                )
            )
        if isinstance(target, Path):
            verdict = self.planner.check(job, target)
            if verdict is not None:
                return _done(dataclasses.replace(verdict, width=width, height=height))

            problem = self.planner.folder_problem(target.parent)
            if problem is not None:
                return _done(failed(job, problem, target, width=width, height=height))

        restorer = self._get_restorer()
        if self.callbacks.started is not None:
            self.callbacks.started(job, decoded.width, decoded.height)
        warned: list[str] = []
        try:
            clean, stats = restorer.restore_rgb(
                decoded.rgb, progress=self.callbacks.tiles, warn=warned.append
            )
        except MprnetError as exc:
            error = reason(exc, job.display)
            return _done(failed(job, error, width=width, height=height))
        except Exception as exc:
            error = self._unexpected(exc, "restoring")
            return _done(failed(job, error, width=width, height=height))
        info, alpha = decoded.info, decoded.alpha
        notes = image_notes(
            info, fmt, has_alpha=alpha is not None, warned=warned, run_notes=stats.notes
        )
        done = restored(
            job,
            target,
            notes,
            seconds=prepared.seconds + stats.seconds,
            device=stats.device,
            backend=stats.backend,
            precision=stats.precision,
            tiles=stats.tiles,
            width=width,
            height=height,
        )
        return encoder.submit(self._write, done, target, fmt, clean, info, alpha)

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
                callbacks=self.callbacks,
            )
        except MprnetError:
            raise  # run-wide (weights, device): as for images
        except Exception as exc:
            return failed(job, self._unexpected(exc, "restoring the video"), target)

    # -- encode thread
    def _write(
        self,
        done: Result,
        target: Target,
        fmt: OutputFormat,
        clean: npt.NDArray[np.float32],
        info: ImageInfo,
        alpha: UIntArray | None,
    ) -> Result:
        start = time.perf_counter()
        label = done.input
        try:
            if isinstance(target, Path):
                if self.plan.destination is Destination.DIRECTORY:
                    make_output_folder(target.parent)
                write_image(
                    target,
                    clean,
                    info,
                    fmt,
                    alpha=alpha,
                    jpeg_quality=self.jpeg_quality,
                    overwrite=self.overwrite,
                )
            else:
                data = encode_image(clean, info, fmt, alpha=alpha, jpeg_quality=self.jpeg_quality)
                _write_stdout(data, self.stdout)
        except OutputExistsError:  # appeared since the check (another process): not ours
            return skipped_at_write(done)
        except MprnetError as exc:
            return failed_at_write(done, reason(exc, label))
        except Exception as exc:
            return failed_at_write(done, self._unexpected(exc, "writing"))
        seconds = (done.seconds or 0.0) + time.perf_counter() - start
        return dataclasses.replace(done, seconds=seconds)

    # -- the loop
    def run(self, jobs: Sequence[Job]) -> Generator[Result, None, None]:
        self._planner = Planner(self.plan, jobs, overwrite=self.overwrite)
        decoder: ThreadPoolExecutor | _Inline = (
            ThreadPoolExecutor(1, thread_name_prefix="mprnet-decode")
            if self.prefetch
            else _Inline()
        )
        encoder: ThreadPoolExecutor | _Inline = (
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

        try:
            while True:
                feed(1)
                if not ahead:
                    break
                prepared = ahead.popleft().result()
                feed(self.prefetch)  # decode the next ones while this one is restored
                outbox.append(self._process(prepared, encoder))
                del prepared  # drop the decoded pixels before the next restore
                while sum(not f.done() for f in outbox) > self.pending:
                    next(f for f in outbox if not f.done()).exception()
                while outbox and outbox[0].done():
                    yield self._emit(outbox.popleft().result())
            while outbox:
                yield self._emit(outbox.popleft().result())
        except BaseException:
            # Ctrl-C, SIGTERM, a closed generator or an error: queued work is dropped, a
            # write in progress completes, and every result that is settled by then (an
            # output on disk above all) still reaches the `finished` callback.
            self._shutdown(decoder, encoder)
            self._emit_settled(outbox)
            raise
        finally:
            self._shutdown(decoder, encoder)

    @staticmethod
    def _shutdown(*pools: ThreadPoolExecutor | _Inline) -> None:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)

    def _emit_settled(self, outbox: deque[Future[Result]]) -> None:
        """Report the finished results nobody has seen yet; quietly, as we are unwinding."""
        for fut in outbox:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                with contextlib.suppress(Exception):  # a broken reporter must not mask the cause
                    self._emit(fut.result())

    def _emit(self, result: Result) -> Result:
        if self.callbacks.finished is not None:
            self.callbacks.finished(result)
        return result


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
    jobs: Sequence[Job],
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
    if isinstance(plan.path, StorePath) or any(isinstance(j.source, StorePath) for j in jobs):
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
