"""The Ray engine's cluster side: the only module that imports ray.

Connecting (or starting a local Ray), the network actors, shipping the weights, streaming
rows back, and `restore_dataset`, the entry point for a caller's own Ray Dataset.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import ray.data
import ray.exceptions

from mprnet_cli.errors import ClusterError, UsageError
from mprnet_cli.runners import RaySettings, stages
from mprnet_cli.runners.ray.plan import (
    _IO_CPUS,
    _TASKS_PER_ACTOR,
    PAYLOAD,
    ClusterPlan,
    RestorerFactory,
    _WeightsCheck,
    cluster_plan,
    default_restorer,
)
from mprnet_cli.runners.ray.stages import _decode_column, _encode_column, _pack, _unpack
from mprnet_cli.settings import RestoreSettings, settings_of
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.weights import ResolvedWeights


class _Network:
    """Ray actor: loads the network once from the shipped weights, then restores payloads:
    a chunk of files (a list of (planned, item)) or one Dataset row's item."""

    def __init__(
        self,
        weights: list[ray.ObjectRef[bytes]],  # in a list, so that Ray hands over the reference
        name: str,
        task: Task | None,
        settings: RestoreSettings,
        factory: RestorerFactory,
        threads: int,
    ) -> None:
        from mprnet_cli.host.device import set_threads

        set_threads(threads)
        data: bytes = ray.get(weights[0])
        with tempfile.TemporaryDirectory(prefix="mprnet-weights-") as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            self.restorer = factory(task, settings, path)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch[PAYLOAD] = np.array(
            [_pack(self._restore(_unpack(p))) for p in batch[PAYLOAD]], dtype=object
        )
        return batch

    def _restore(self, payload: Any) -> Any:
        if isinstance(payload, list):
            return [(planned, self._one(item)) for planned, item in payload]
        return self._one(payload)

    def _one(self, item: Any) -> Any:
        """Restore one image and quantise it as it will be stored: integers travel back."""
        if isinstance(item, stages.Decoded):
            return stages.quantize(stages.restore(self.restorer, item))
        return item


# --------------------------------------------------------------------------- the cluster


def _connect(address: str | None) -> bool:
    """Join `address` (or RAY_ADDRESS) when given, else start a private local Ray; True if
    we did either (a Ray this process already holds is used as it is)."""
    if ray.is_initialized():
        return False
    # The reporter speaks for the run: Ray's start-up notes and its workers' output would
    # bury the per-image lines (errors still raise). RAY_BACKEND_LOG_LEVEL is left alone:
    # setting it makes Ray's core print a line saying so on every run ("logging.cc: Set
    # ray log level from environment variable"), and its default prints nothing here.
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
            # "local" always starts a new Ray for this run: "auto" (and a bare init) join
            # any Ray running on the machine, such as another run's private one, which then
            # shuts down under this run.
            ray.init(address="local", include_dashboard=False, **quiet)
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
    task: Task | None,
    settings: RestoreSettings,
    cluster: ClusterPlan,
    factory: RestorerFactory,
    actor: type[_Network] = _Network,
) -> ray.data.Dataset:
    threads = _threads(settings, cluster)
    return ds.map_batches(
        actor,  # `_Network`, or a subclass that restores more kinds of payload (video.py)
        fn_constructor_args=(weights[0], weights[1], task, settings, factory, threads),
        batch_size=1,  # one chunk of files (or one Dataset row) per call
        batch_format="numpy",
        # The pool starts at `min_workers` and grows to `workers` while work waits (both
        # equal with --workers).
        compute=ray.data.ActorPoolStrategy(
            min_size=cluster.min_workers,
            max_size=cluster.workers,
            max_tasks_in_flight_per_actor=_TASKS_PER_ACTOR,
        ),
        num_cpus=cluster.cpus_per_worker,
        num_gpus=cluster.gpus_per_worker,
        # The actor's thread pools match its CPU reservation from process start. This also
        # keeps decoding out of the actor: Ray Data fuses a task stage into the next actor
        # stage when their remote arguments are equal, which would serialise decoding with
        # the network. (Crashed actors are restarted and their tasks retried: Ray Data's
        # defaults, max_restarts=-1 and max_task_retries=-1.)
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}},
    )


def _threads(settings: RestoreSettings, cluster: ClusterPlan) -> int:
    return settings.threads or max(1, int(cluster.cpus_per_worker))


def _payloads_of(ds: ray.data.Dataset) -> Iterator[bytes]:
    """The job's result payloads as each block arrives; a failure of the job itself (not
    of one file) as one line.

    Block by block without prefetching: `iter_rows` (prefetch_batches=1) holds each block
    back until the next one is ready, which delayed every record by a chunk's time."""
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            yield from batch[PAYLOAD]
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise ClusterError(
            f"the Ray job failed ({type(exc).__name__}: {lines[-1] if lines else exc}); "
            "see the Ray logs (`ray logs`, or the dashboard) for the cause"
        ) from exc


def _resources() -> dict[str, float]:
    """The cluster's resources (CPU, GPU, ...), for `cluster_plan` (ray leaves it untyped)."""
    resources: dict[str, float] = ray.cluster_resources()
    return resources


def _dataset_of(chunks: list[bytes]) -> ray.data.Dataset:
    """Packed chunks of jobs as a Dataset of one chunk per row and per block."""
    rows = [{"chunk": i, PAYLOAD: chunk} for i, chunk in enumerate(chunks)]
    return ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))


# --------------------------------------------------------------------------- datasets


def restore_dataset(
    ds: ray.data.Dataset,
    task: Task | str | None = None,
    *,
    column: str = "bytes",
    label_column: str | None = None,
    settings: RestoreSettings | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    factory: RestorerFactory = default_restorer,
    **overrides: Any,
) -> ray.data.Dataset:
    """Restore the encoded images in `ds[column]`; returns a lazy Dataset with four more columns.

    `settings` (default: `RestoreSettings()`) with keyword `overrides` of its fields
    (`device="cpu"`, `format="png"`, `jpeg_quality=90`, ...). Adds ``restored`` (the
    encoded result, or None), ``format`` (png, jpg, webp, tiff; `format` `same` keeps each
    image's kind as the CLI does), ``status`` (ok or failed) and ``error`` (the reason, or
    None). Every other column passes through, so mprnet composes with the caller's own
    pipeline (e.g. ``ray.data.read_parquet`` then ``write_parquet``). A row that cannot be
    decoded or restored fails alone. Weights are resolved here, on the driver, and shipped
    to the actors through the object store. `label_column` names rows in error messages
    (default: "row"). Ray must be initialised (a Dataset exists).
    """
    from mprnet_cli.weights import resolve

    if "fmt" in overrides:  # the keyword this function took before the settings existed
        overrides["format"] = overrides.pop("fmt")
    chosen = settings_of(settings, **overrides)
    if chosen.compile:
        raise UsageError("compile is not supported by the Ray engine yet; drop it")
    try:
        chosen_task = Task(task) if task is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    resolved = resolve(chosen_task, weights=chosen.weights, model=chosen.model, quiet=True)
    with _WeightsCheck(resolved.path) as check:
        check.wait()
    cluster = cluster_plan(_resources(), RaySettings(None, workers, gpus_per_worker), chosen.device)
    decoded = ds.map(
        functools.partial(
            _decode_column,
            column=column,
            label_column=label_column,
            fmt=chosen.format,
            max_pixels=chosen.max_pixels,
        ),
        num_cpus=_IO_CPUS,
    )
    net = _infer_stage(decoded, _ship_weights(resolved), chosen_task, chosen, cluster, factory)
    return net.map(
        functools.partial(_encode_column, jpeg_quality=chosen.jpeg_quality), num_cpus=_IO_CPUS
    )
