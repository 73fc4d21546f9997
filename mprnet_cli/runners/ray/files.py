"""The Ray engine's file runner (`--engine ray` in the CLI): plan on the driver, stream
the pending jobs through the cluster, report one `Result` per job.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mprnet_cli.errors import UsageError
from mprnet_cli.imageio import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS, temp_target
from mprnet_cli.jobs import (
    Callbacks,
    Destination,
    Job,
    OutputPlan,
    Planner,
    Result,
    Screened,
    Status,
    failed,
    failed_at_write,
    restored,
    skipped_at_write,
)
from mprnet_cli.locations import StorePath, Where
from mprnet_cli.runners import RaySettings
from mprnet_cli.runners.ray.cluster import (
    _connect,
    _dataset_of,
    _infer_stage,
    _quiet_ray_data,
    _resources,
    _rows_of,
    _ship_weights,
    _stop,
)
from mprnet_cli.runners.ray.plan import (
    PAYLOAD,
    NetworkSettings,
    RestorerFactory,
    _check_weights,
    cluster_plan,
    default_restorer,
)
from mprnet_cli.runners.ray.stages import _decode_file, _unpack, _write_file, _Written

if TYPE_CHECKING:
    from mprnet_cli.weights import ResolvedWeights

# --------------------------------------------------------------------------- files (the CLI)


def restore_files(
    jobs: Sequence[Job],
    plan: OutputPlan,
    *,
    weights: Callable[[], ResolvedWeights],
    network: NetworkSettings,
    settings: RaySettings = RaySettings(),  # noqa: B008 - frozen
    overwrite: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    callbacks: Callbacks | None = None,
    factory: RestorerFactory = default_restorer,
) -> Generator[Result, None, None]:
    """Restore `jobs` on Ray, yielding one `Result` per job as it completes (any order).

    `weights` resolves the weights file on the driver; it is called only when some job
    needs the network. The planner's verdicts (skipped, failed early) come first.
    """
    if plan.destination is Destination.STDOUT or any(j.source is None for j in jobs):
        raise UsageError(
            "--engine ray reads and writes files: stdin (-) and -o - need --engine local"
        )
    return _FileRun(
        jobs,
        plan,
        weights,
        network,
        settings,
        overwrite,
        jpeg_quality,
        max_pixels,
        callbacks or Callbacks(),
        factory,
    ).run()


@dataclass
class _FileRun:
    jobs: Sequence[Job]
    plan: OutputPlan
    weights: Callable[[], ResolvedWeights]
    network: NetworkSettings
    settings: RaySettings
    overwrite: bool
    jpeg_quality: int
    max_pixels: int | None
    callbacks: Callbacks
    factory: RestorerFactory
    _pending: dict[int, Screened] = field(default_factory=dict)

    def _emit(self, result: Result) -> Result:
        if self.callbacks.finished is not None:
            self.callbacks.finished(result)
        return result

    def run(self) -> Generator[Result, None, None]:
        planner = Planner(self.plan, self.jobs, overwrite=self.overwrite)
        for index, job in enumerate(self.jobs):
            verdict = planner.screen(job)
            if isinstance(verdict, Result):
                yield self._emit(verdict)
            else:
                self._pending[index] = verdict
        if not self._pending:
            return  # everything skipped or failed early: no weights, no Ray
        resolved = self.weights()
        _check_weights(resolved)
        started = _connect(self.settings.address)
        since = time.time()
        stopped = False
        try:
            yield from self._stream(resolved)
        except BaseException:
            # Ctrl-C, SIGTERM, a closed generator or an error: stop the workers first, then
            # report the outputs they finished that the driver had not heard of yet.
            _stop(started)
            stopped = True
            self._report_settled(since)
            raise
        finally:
            if not stopped:
                _stop(started)
            self._sweep_unfinished()

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

    def _rows(self) -> Iterator[dict[str, Any]]:
        for index, screened in self._pending.items():
            job = screened.job
            yield {
                "index": index,
                "source": str(job.source),
                "root": "" if job.root is None else str(job.root),
                "target": "" if screened.target is None else str(screened.target),
            }

    def _stream(self, resolved: ResolvedWeights) -> Iterator[Result]:
        _quiet_ray_data()
        cluster = cluster_plan(_resources(), self.settings, self.network.device)
        rows = list(self._rows())
        cwd = str(Path.cwd())
        ds = _dataset_of(rows)
        ds = ds.map(
            functools.partial(_decode_file, plan=self.plan, max_pixels=self.max_pixels, cwd=cwd),
            num_cpus=1,
        )
        ds = _infer_stage(ds, _ship_weights(resolved), self.network, cluster, self.factory)
        ds = ds.map(
            functools.partial(
                _write_file,
                plan=self.plan,
                jpeg_quality=self.jpeg_quality,
                overwrite=self.overwrite,
                cwd=cwd,
            ),
            num_cpus=1,
        )
        for row in _rows_of(ds):
            screened = self._pending.pop(int(row["index"]), None)
            if screened is None:
                continue  # a retried task's second report of a finished job
            yield self._emit(self._result(screened, _unpack(row[PAYLOAD])))

    def _result(self, screened: Screened, written: _Written) -> Result:
        job, target = screened.job, screened.target
        if not written.written:
            return failed(
                job, written.error or "failed", width=written.width, height=written.height
            )
        assert target is not None and written.width is not None and written.height is not None
        done = restored(
            job,
            target,
            written.notes,
            seconds=written.seconds,
            device=written.device,
            backend=written.backend,
            precision=written.precision,
            tiles=written.tiles,
            width=written.width,
            height=written.height,
        )
        if written.status is Status.SKIPPED:
            return skipped_at_write(done)
        if written.status is Status.FAILED:
            return failed_at_write(done, written.error or "failed")
        return done

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


def _mtime(target: Where) -> float:
    """When `target` was last written (0 when an object store does not say)."""
    if isinstance(target, StorePath):
        return target.mtime() or 0.0
    return target.stat().st_mtime
