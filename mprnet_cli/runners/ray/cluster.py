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

from mprnet_cli.choices import (
    BackendChoice,
    Ensemble,
    ModelChoice,
    OutputFormat,
    Precision,
    SplitLines,
    split_lines_choice,
)
from mprnet_cli.errors import ClusterError, MprnetError, UsageError
from mprnet_cli.imageio import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS, unit_rgb
from mprnet_cli.jobs import image_notes, reason, unexpected
from mprnet_cli.quality import check_ensemble, check_strength
from mprnet_cli.runners import RaySettings
from mprnet_cli.runners.ray.plan import (
    _MAX_BLOCKS,
    _TASKS_PER_ACTOR,
    PAYLOAD,
    ClusterPlan,
    NetworkSettings,
    RestorerFactory,
    _check_weights,
    cluster_plan,
    default_restorer,
)
from mprnet_cli.runners.ray.stages import (
    _decode_column,
    _Decoded,
    _encode_column,
    _Failed,
    _pack,
    _Restored,
    _unpack,
)
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    from mprnet_cli.weights import ResolvedWeights


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


def _resources() -> dict[str, float]:
    """The cluster's resources (CPU, GPU, ...), for `cluster_plan` (ray leaves it untyped)."""
    resources: dict[str, float] = ray.cluster_resources()
    return resources


def _dataset_of(rows: list[dict[str, Any]]) -> ray.data.Dataset:
    """The rows as a Dataset of one row per block (up to `_MAX_BLOCKS`)."""
    return ray.data.from_items(rows, override_num_blocks=_blocks(len(rows)))


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
    split_lines: SplitLines | str | None = None,
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
            split_lines=split_lines_choice(split_lines, hide_split_lines),
        )
        model_choice = ModelChoice(model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not 1 <= jpeg_quality <= 100:
        raise UsageError(f"jpeg_quality must be between 1 and 100, got {jpeg_quality}")
    resolved = resolve(chosen_task, weights=weights, model=model_choice, quiet=True)
    _check_weights(resolved)
    cluster = cluster_plan(_resources(), RaySettings(None, workers, gpus_per_worker), device)
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
