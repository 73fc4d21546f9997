"""Restore on a Ray cluster with Ray Data: the only module that imports ray.

The pipeline (`restore_files` for the CLI, `restore_dataset` for a Ray Dataset)::

    rows -> decode (CPU tasks) -> network (actor pool, CPU or GPU) -> encode (CPU tasks) -> rows

* The driver plans every job with `mprnet_cli.jobs.Planner` (names, skip-existing, claims,
  stale temp files): the same rules as `--engine local`. A run whose outputs all exist
  neither resolves weights nor starts Ray.
* Weights are resolved once, on the driver (cache, download or bundled), checked there,
  and their bytes put once in the object store; each actor reads them from there and
  loads the network once. Workers never look for weights themselves.
* Decode tasks ship the compact integer pixels (`to_uint8`/`to_uint16` of the decoded
  image, one channel for gray); the actor rebuilds the float input with `imageio.unit_rgb`,
  bit for bit what `read_image` produced, so outputs are byte-identical to the local
  engine's. The actor returns float32 pixels, which the encode task quantises exactly as
  locally. Payloads travel as pickled bytes in a `payload` column.
* In-flight data is bounded by Ray Data's streaming executor: it backpressures each
  operator against this job's object-store budget (half of the cluster's object store by
  default; `RAY_DATA_OBJECT_STORE_MEMORY_LIMIT_FRACTION` changes it), each actor holds at
  most `_TASKS_PER_ACTOR` queued blocks, input blocks hold one path each (up to
  `_MAX_BLOCKS` blocks) and decoded blocks are cut at Ray Data's target block size, so a
  million inputs never materialise at once.
* Faults: a file that fails (corrupt, too big, unwritable output) is a failed row, like
  locally. A crashed actor is restarted and its task retried by Ray (`max_restarts`,
  `max_task_retries`: Ray Data's defaults, unlimited); writes are atomic (and replace an
  existing file only with --overwrite), and the driver keeps one record per input, so a
  retried task neither loses nor duplicates an output. A pool that cannot fit the cluster
  is refused before the job starts (Ray Data would wait for it), and a failure of the
  job itself is one `ClusterError` line. On Ctrl-C the driver stops the job (shutting down a Ray it
  started), reports the outputs its workers finished that it had not heard of, then
  removes the temporary files of the writes it had not heard back from.
* Results stream to the driver as encode tasks finish: not in input order.
* INPUT and -o may be object-store URIs (`mprnet_cli.locations.StorePath`): the driver
  lists and plans them with the same planner; decode tasks read each object through
  pyarrow.fs, encode tasks write each output in one request (no temporary objects).
  Credentials come from each node's own environment.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import pickle
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import ray
import ray.data
import ray.exceptions

from mprnet_cli.choices import BackendChoice, Ensemble, ModelChoice, OutputFormat, Precision
from mprnet_cli.errors import (
    ClusterError,
    InputError,
    MprnetError,
    OutputExistsError,
    UsageError,
)
from mprnet_cli.imageio import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    UIntArray,
    encode_image,
    read_image,
    resolve_format,
    temp_target,
    to_uint8,
    to_uint16,
    unit_rgb,
    write_image,
)
from mprnet_cli.jobs import (
    Callbacks,
    Destination,
    Job,
    OutputPlan,
    Planner,
    RestorerLike,
    Result,
    Screened,
    Status,
    failed,
    failed_at_write,
    image_notes,
    make_output_folder,
    reason,
    restored,
    skipped_at_write,
    unexpected,
)
from mprnet_cli.locations import StorePath, Where, location
from mprnet_cli.quality import check_ensemble, check_strength
from mprnet_cli.runners import RaySettings
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.weights import ResolvedWeights

__all__ = [
    "PAYLOAD",
    "NetworkSettings",
    "RestorerFactory",
    "cluster_plan",
    "restore_dataset",
    "restore_files",
]

PAYLOAD: Final = "payload"
_TASKS_PER_ACTOR: Final = 2
_MAX_BLOCKS: Final = 10_000


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class NetworkSettings:
    """How each actor builds its network (the restore options other than the weights)."""

    task: Task | None = None
    device: str = "auto"
    precision: Precision = Precision.AUTO
    tile: int | None = None
    tile_overlap: int = 32
    tile_batch: int = 1
    compile: bool = False
    threads: int | None = None  # torch threads per actor (None: the actor's CPUs)
    backend: BackendChoice = BackendChoice.AUTO
    strength: float = 1.0
    ensemble: Ensemble = Ensemble.OFF
    hide_split_lines: bool = False


#: Builds the restorer inside an actor from the weights file it was shipped (a test seam and
#: the hook for custom restorers). Must be picklable: it travels to the actors.
RestorerFactory = Callable[[NetworkSettings, Path], RestorerLike]


def default_restorer(settings: NetworkSettings, weights: Path) -> RestorerLike:
    """`mprnet_cli.api.Restorer` on the shipped file (it never resolves weights itself)."""
    from mprnet_cli.api import Restorer

    return Restorer(
        settings.task,
        weights=weights,
        model=ModelChoice.AUTO,
        device=settings.device,
        precision=settings.precision,
        tile=settings.tile,
        tile_overlap=settings.tile_overlap,
        tile_batch=settings.tile_batch,
        compile=settings.compile,
        backend=settings.backend,
        strength=settings.strength,
        ensemble=settings.ensemble,
        hide_split_lines=settings.hide_split_lines,
        quiet=True,
    )


@dataclass(frozen=True)
class ClusterPlan:
    """How many inference actors, and what each reserves."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float


def cluster_plan(
    resources: dict[str, float], settings: RaySettings, device: str = "auto"
) -> ClusterPlan:
    """Actors for a cluster's resources: one per GPU, else a quarter as many as CPUs.

    On a CPU-only cluster each actor reserves an equal share of the CPUs left after one per
    actor is kept for decoding and encoding (2 CPUs: one actor on one CPU, one CPU for I/O).
    """
    cpus = float(resources.get("CPU", 1.0))
    gpus = float(resources.get("GPU", 0.0))
    gpw = settings.gpus_per_worker
    if gpw is None:
        gpw = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    if gpw < 0:
        raise UsageError("--gpus-per-worker must be 0 or more")
    if gpw > 0 and device == "cpu":
        raise UsageError("--gpus-per-worker and --device cpu contradict each other; drop one")
    if gpw > 0:
        workers = settings.workers or max(1, math.floor(gpus / gpw))
        return _fits(ClusterPlan(workers, 1.0, gpw), cpus, gpus)
    if device.startswith("cuda"):
        raise UsageError(
            f"--device {device} needs GPUs on the workers: give --gpus-per-worker (the cluster "
            f"reports {gpus:g} GPUs)"
        )
    workers = settings.workers or max(1, int(cpus // 4))
    per = max(1.0, float((cpus - workers) // workers))
    return _fits(ClusterPlan(workers, per, 0.0), cpus, gpus)


def _fits(plan: ClusterPlan, cpus: float, gpus: float) -> ClusterPlan:
    """The pool must fit the cluster as it is, with a CPU left for decoding and encoding:
    Ray Data would otherwise wait for actors that cannot start."""
    need_gpus = plan.workers * plan.gpus_per_worker
    if need_gpus > gpus:
        raise ClusterError(
            f"{plan.workers} network actors x {plan.gpus_per_worker:g} GPU need {need_gpus:g} "
            f"GPUs; the cluster has {gpus:g}: lower --workers or --gpus-per-worker"
        )
    need_cpus = plan.workers * plan.cpus_per_worker + 1
    if need_cpus > cpus:
        each = "one" if plan.cpus_per_worker == 1 else f"{plan.cpus_per_worker:g}"
        raise ClusterError(
            f"{plan.workers} network actors need {need_cpus:g} CPUs ({each} each, plus one "
            f"for decoding and encoding); the cluster has {cpus:g}: lower --workers"
        )
    return plan


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class _Failed:
    error: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class _Decoded:
    """Compact integer pixels: (H, W) gray or (H, W, 3), uint8 or uint16 per `info.bit_depth`."""

    label: str
    pixels: npt.NDArray[Any]
    alpha: UIntArray | None
    info: ImageInfo
    fmt: OutputFormat
    seconds: float

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


@dataclass(frozen=True)
class _Restored:
    label: str
    rgb: npt.NDArray[np.float32]
    alpha: UIntArray | None
    info: ImageInfo
    fmt: OutputFormat
    seconds: float
    device: str
    tiles: int
    notes: tuple[str, ...]
    backend: str | None = None
    precision: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True)
class _Written:
    """The encode stage's outcome; `written` False: the image never reached it (failed earlier)."""

    status: Status
    error: str | None = None
    written: bool = True
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    device: str | None = None
    backend: str | None = None
    precision: str | None = None
    tiles: int | None = None
    notes: tuple[str, ...] = ()
    fmt: OutputFormat | None = None
    data: bytes | None = field(default=None, repr=False)  # the encoded file (Dataset path)


def _pack(item: object) -> bytes:
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(data: bytes) -> Any:
    return pickle.loads(data)


# --------------------------------------------------------------------------- stages


def _decode(source: Path | bytes, label: str, fmt: OutputFormat, max_pixels: int | None) -> Any:
    """Decode one input into a `_Decoded` (or `_Failed` with the local engine's reason)."""
    start = time.perf_counter()
    try:
        decoded = read_image(source, name=label, max_pixels=max_pixels)
    except MprnetError as exc:
        return _Failed(reason(exc, label))
    except Exception as exc:
        return _Failed(unexpected(exc, "decoding"))
    info = decoded.info
    pixels: npt.NDArray[Any] = (
        to_uint16(decoded.rgb) if info.bit_depth == 16 else to_uint8(decoded.rgb)
    )
    if info.grayscale:
        pixels = np.ascontiguousarray(pixels[..., 0])
    return _Decoded(
        label,
        pixels,
        decoded.alpha,
        info,
        resolve_format(fmt, info),
        time.perf_counter() - start,
    )


def _job_of(row: dict[str, Any]) -> Job:
    root = row["root"]
    return Job(location(row["source"]), root=location(root) if root else None)


@contextlib.contextmanager
def _in_folder(folder: str, where: Where | None = None) -> Iterator[None]:
    """Run a file task in the driver's working directory, so relative INPUTs and -o mean
    on every node what they meant on the driver (and messages name files the same way).
    An object in a store (`where`) needs no folder: nothing changes."""
    if isinstance(where, StorePath):
        yield
        return
    before = Path.cwd()
    try:
        os.chdir(folder)
    except OSError as exc:
        raise InputError(
            f"the folder {folder} the command was run from is not reachable on this Ray node "
            f"({exc.strerror or exc}); use a shared file system mounted at the same path"
        ) from None
    try:
        yield
    finally:
        os.chdir(before)


def _decode_file(
    row: dict[str, Any], *, plan: OutputPlan, max_pixels: int | None, cwd: str
) -> dict[str, Any]:
    """Ray task: read and decode one planned file; its output name must be the planned one."""
    job = _job_of(row)
    source = job.source
    assert source is not None
    try:
        with _in_folder(cwd, source):
            data = source.read_bytes() if isinstance(source, StorePath) else source
            item = _decode(data, job.label, plan.format, max_pixels)
    except InputError as exc:
        item = _Failed(reason(exc, job.label))
    if isinstance(item, _Decoded):
        settled = plan.target(job, item.fmt)
        if str(settled) != row["target"]:
            item = _Failed(
                f"the file changed while the run was planned (its output would now be "
                f"{settled}); run again",
                *item.size,
            )
    return {"index": row["index"], "target": row["target"], PAYLOAD: _pack(item)}


class _Network:
    """Ray actor: loads the network once from the shipped weights, then restores rows."""

    def __init__(
        self,
        weights: list[ray.ObjectRef[bytes]],  # in a list, so that Ray hands over the reference
        name: str,
        settings: NetworkSettings,
        factory: RestorerFactory,
        threads: int,
    ) -> None:
        from mprnet_cli.device import set_threads

        set_threads(threads)
        data: bytes = ray.get(weights[0])
        with tempfile.TemporaryDirectory(prefix="mprnet-weights-") as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            self.restorer = factory(settings, path)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch[PAYLOAD] = np.array(
            [_pack(self._restore(_unpack(p))) for p in batch[PAYLOAD]], dtype=object
        )
        return batch

    def _restore(self, item: Any) -> Any:
        if not isinstance(item, _Decoded):
            return item
        rgb = unit_rgb(item.pixels, item.info.bit_depth)
        warned: list[str] = []
        try:
            out, stats = self.restorer.restore_rgb(rgb, warn=warned.append)
        except MprnetError as exc:
            return _Failed(reason(exc, item.label), *item.size)
        except Exception as exc:
            return _Failed(unexpected(exc, "restoring"), *item.size)
        notes = image_notes(
            item.info,
            item.fmt,
            has_alpha=item.alpha is not None,
            warned=warned,
            run_notes=stats.notes,
        )
        return _Restored(
            item.label,
            out,
            item.alpha,
            item.info,
            item.fmt,
            item.seconds + stats.seconds,
            stats.device,
            stats.tiles,
            notes,
            backend=stats.backend,
            precision=stats.precision,
        )


def _finish(item: Any, write: Callable[[_Restored], bytes | None]) -> _Written:
    """Run the encode stage's `write` on a restored image; every outcome becomes a `_Written`."""
    if isinstance(item, _Failed):
        return _Written(
            Status.FAILED, error=item.error, written=False, width=item.width, height=item.height
        )
    assert isinstance(item, _Restored)
    width, height = item.size
    start = time.perf_counter()
    status, error, data = Status.OK, None, None
    try:
        data = write(item)
    except OutputExistsError:  # appeared since the plan (another process): not ours
        status = Status.SKIPPED
    except MprnetError as exc:
        status, error = Status.FAILED, reason(exc, item.label)
    except Exception as exc:
        status, error = Status.FAILED, unexpected(exc, "writing")
    return _Written(
        status,
        error=error,
        width=width,
        height=height,
        seconds=item.seconds + time.perf_counter() - start,
        device=item.device,
        backend=item.backend,
        precision=item.precision,
        tiles=item.tiles,
        notes=item.notes,
        fmt=item.fmt,
        data=data,
    )


def _write_file(
    row: dict[str, Any], *, plan: OutputPlan, jpeg_quality: int, overwrite: bool, cwd: str
) -> dict[str, Any]:
    """Ray task: encode one restored image and write it atomically to its planned name
    (an object: in one request, after checking it is still absent unless `overwrite`)."""
    target = location(row["target"])

    def write(item: _Restored) -> None:
        if isinstance(target, StorePath):
            if not overwrite and target.exists():
                raise OutputExistsError(f"{target} exists")
            target.write_bytes(
                encode_image(
                    item.rgb, item.info, item.fmt, alpha=item.alpha, jpeg_quality=jpeg_quality
                )
            )
            return
        if plan.destination is Destination.DIRECTORY:
            make_output_folder(target.parent)
        write_image(
            target,
            item.rgb,
            item.info,
            item.fmt,
            alpha=item.alpha,
            jpeg_quality=jpeg_quality,
            overwrite=overwrite,
        )

    item = _unpack(row[PAYLOAD])
    try:
        with _in_folder(cwd, target):
            written = _finish(item, write)
    except InputError as exc:  # the folder is not there: fail the row, not the job
        size = item.size if isinstance(item, _Restored) else (None, None)
        written = _finish(_Failed(str(exc), *size), write)
    return {"index": row["index"], PAYLOAD: _pack(written)}


# --------------------------------------------------------------------------- the cluster


def _connect(address: str | None) -> bool:
    """Join `address`, else the cluster `ray` finds, else start a local one; True if we did."""
    if ray.is_initialized():
        return False
    # The reporter speaks for the run: Ray's start-up notes, its workers' output and its
    # core's advisory log lines would bury the per-image lines (errors still raise).
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    with _signal_handlers_kept():
        _init(address, quiet)
    return True


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Ray's core installs its own SIGTERM handler in the driver (it dumps a stack and
    exits 15); put back the one the CLI installed, so SIGTERM stays a clean stop (143)."""
    main = threading.current_thread() is threading.main_thread()
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


def _init(address: str | None, quiet: dict[str, Any]) -> None:
    try:
        if address:
            ray.init(address=address, **quiet)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(**quiet)
        else:
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                ray.init(include_dashboard=False, **quiet)
    except ConnectionError as exc:
        raise UsageError(
            f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
            f"{' '.join(str(exc).split())}; check --ray-address (or RAY_ADDRESS)"
        ) from None


def _stop(started: bool) -> None:
    """Shut down the Ray this run started or joined: its workers stop (a local Ray) or the
    cluster stops this job's workers as the driver leaves; no write of ours runs after."""
    if started:
        ray.shutdown()


def _quiet_ray_data() -> None:
    """Our reporter speaks for the run: no Ray Data progress bars or execution logs."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _ship_weights(resolved: ResolvedWeights) -> tuple[list[ray.ObjectRef[bytes]], str]:
    """The weights file's bytes, put once in the object store, and its name."""
    path = resolved.path
    return [ray.put(path.read_bytes())], path.name


def _infer_stage(
    ds: ray.data.Dataset,
    weights: tuple[list[ray.ObjectRef[bytes]], str],
    network: NetworkSettings,
    cluster: ClusterPlan,
    factory: RestorerFactory,
) -> ray.data.Dataset:
    return ds.map_batches(
        _Network,
        fn_constructor_args=(weights[0], weights[1], network, factory, _threads(network, cluster)),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=cluster.workers, max_tasks_in_flight_per_actor=_TASKS_PER_ACTOR
        ),
        num_cpus=cluster.cpus_per_worker,
        num_gpus=cluster.gpus_per_worker,
        # The actor's thread pools match its CPU reservation from process start. This also
        # keeps decoding out of the actor: Ray Data fuses a task stage into the next actor
        # stage when their remote arguments are equal, which would serialise decoding with
        # the network. (Crashed actors are restarted and their tasks retried: Ray Data's
        # defaults, max_restarts=-1 and max_task_retries=-1.)
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(_threads(network, cluster))}},
    )


def _threads(network: NetworkSettings, cluster: ClusterPlan) -> int:
    return network.threads or max(1, int(cluster.cpus_per_worker))


def _rows_of(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """The job's result rows; a failure of the job itself (not of one file) as one line."""
    try:
        yield from ds.iter_rows()
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise ClusterError(
            f"the Ray job failed ({type(exc).__name__}: {lines[-1] if lines else exc}); "
            "see the Ray logs (`ray logs`, or the dashboard) for the cause"
        ) from exc


def _blocks(n: int) -> int:
    """One image per block up to `_MAX_BLOCKS` (fine-grained retries and balance)."""
    return max(1, min(n, _MAX_BLOCKS))


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
        cluster = cluster_plan(ray.cluster_resources(), self.settings, self.network.device)
        rows = list(self._rows())
        cwd = str(Path.cwd())
        ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=_blocks(len(rows)))
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


# --------------------------------------------------------------------------- datasets


def restore_dataset(
    ds: ray.data.Dataset,
    task: Task | str | None = None,
    *,
    column: str = "bytes",
    label_column: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    model: ModelChoice | str = ModelChoice.AUTO,
    device: str = "auto",
    precision: Precision | str = Precision.AUTO,
    tile: int | None = None,
    tile_overlap: int = 32,
    tile_batch: int = 1,
    threads: int | None = None,
    backend: BackendChoice | str = BackendChoice.AUTO,
    strength: float = 1.0,
    ensemble: Ensemble | int | str = Ensemble.OFF,
    hide_split_lines: bool = False,
    fmt: OutputFormat | str = OutputFormat.SAME,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    factory: RestorerFactory = default_restorer,
) -> ray.data.Dataset:
    """Restore the encoded images in `ds[column]`; returns a lazy Dataset with four more columns.

    ``restored`` (the encoded result, or None), ``format`` (png, jpg, webp, tiff; `fmt`
    `same` keeps each image's kind as the CLI does), ``status`` (ok or failed) and
    ``error`` (the reason, or None). Every other column passes through, so mprnet composes
    with the caller's own pipeline (e.g. ``ray.data.read_parquet`` then ``write_parquet``).
    A row that cannot be decoded or restored fails alone. Weights are resolved here, on
    the driver, and shipped to the actors through the object store. `label_column` names
    rows in error messages (default: "row"). Ray must be initialised (a Dataset exists).
    """
    from mprnet_cli.weights import resolve

    try:
        chosen_task = Task(task) if task is not None else None
        out_fmt = OutputFormat(fmt)
        network = NetworkSettings(
            chosen_task,
            device,
            Precision(precision),
            tile,
            tile_overlap,
            tile_batch,
            threads=threads,
            backend=BackendChoice(backend),
            strength=check_strength(strength),
            ensemble=check_ensemble(ensemble),
            hide_split_lines=hide_split_lines,
        )
        model_choice = ModelChoice(model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"jpeg_quality must be between 1 and 100, got {jpeg_quality}")
    resolved = resolve(chosen_task, weights=weights, model=model_choice, quiet=True)
    _check_weights(resolved)
    cluster = cluster_plan(
        ray.cluster_resources(), RaySettings(None, workers, gpus_per_worker), device
    )
    decoded = ds.map(
        functools.partial(
            _decode_column,
            column=column,
            label_column=label_column,
            fmt=out_fmt,
            max_pixels=max_pixels,
        ),
        num_cpus=1,
    )
    net = _infer_stage(decoded, _ship_weights(resolved), network, cluster, factory)
    return net.map(functools.partial(_encode_column, jpeg_quality=jpeg_quality), num_cpus=1)


def _check_weights(resolved: ResolvedWeights) -> None:
    """Fail on the driver, with the local engine's message, before any actor tries."""
    from mprnet_cli.model.checkpoint import read_checkpoint

    read_checkpoint(resolved.path)


def _decode_column(
    row: dict[str, Any],
    *,
    column: str,
    label_column: str | None,
    fmt: OutputFormat,
    max_pixels: int | None,
) -> dict[str, Any]:
    """Ray task: decode the bytes in `row[column]` into the payload column."""
    label = str(row[label_column]) if label_column is not None else "row"
    data = row.get(column)
    if isinstance(data, (bytes, bytearray, memoryview)):
        item = _decode(bytes(data), label, fmt, max_pixels)
    else:
        item = _Failed(f"column {column!r} holds {type(data).__name__}, not the bytes of an image")
    return {**row, PAYLOAD: _pack(item)}


def _encode_column(row: dict[str, Any], *, jpeg_quality: int) -> dict[str, Any]:
    """Ray task: encode the restored payload into the output columns."""
    payload = row.pop(PAYLOAD)

    def encode(item: _Restored) -> bytes:
        return encode_image(
            item.rgb, item.info, item.fmt, alpha=item.alpha, jpeg_quality=jpeg_quality
        )

    written = _finish(_unpack(payload), encode)
    ok = written.status is Status.OK
    return {
        **row,
        "restored": written.data if ok else None,
        "format": written.fmt.value if ok and written.fmt is not None else None,
        "status": written.status.value,
        "error": written.error,
    }
