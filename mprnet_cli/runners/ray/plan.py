"""The Ray engine's settings and cluster plan: what each actor runs and how many fit.

No ray import here: plain arithmetic over `ray.cluster_resources()`, tested without a cluster.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mprnet_cli.choices import ModelChoice
from mprnet_cli.errors import CheckpointError, ClusterError, UnsafeCheckpointError, UsageError
from mprnet_cli.jobs import RestorerLike
from mprnet_cli.runners import RaySettings
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task

if TYPE_CHECKING:
    pass

PAYLOAD: Final = "payload"
_TASKS_PER_ACTOR: Final = 2
#: A chunk (one row, one block, one task per stage) holds inputs up to this many file bytes
#: (`_CHUNK_IMAGES` at most): small images travel many to a task, large ones alone.
_CHUNK_BYTES: Final = 1 << 20
_CHUNK_IMAGES: Final = 256
#: CPUs each decode and each write task reserves. Half: a write is mostly its fsync's
#: wait, and the one CPU `cluster_plan` keeps for I/O must hold a decode and a write task at
#: once. Ray Data (2.60) reserves each stage's minimum upstream first, so at a whole CPU
#: each, decoding and the actors took every CPU of a 2-CPU machine and nothing was written
#: (nor reported) until the last chunk of a window was decoded.
_IO_CPUS: Final = 0.5


# --------------------------------------------------------------------------- settings

#: Builds the restorer inside an actor from the task, the run's settings (shipped unchanged)
#: and the weights file it was shipped (a test seam and the hook for custom restorers).
#: Must be picklable: it travels to the actors.
RestorerFactory = Callable[[Task | None, RestoreSettings, Path], RestorerLike]


def default_restorer(task: Task | None, settings: RestoreSettings, weights: Path) -> RestorerLike:
    """`mprnet_cli.api.Restorer` on the shipped file (it never resolves weights itself: the
    driver chose the file, per `settings.weights` and `settings.model`)."""
    from mprnet_cli.api import Restorer

    return Restorer(task, weights, settings.replace(model=ModelChoice.AUTO), quiet=True)


@dataclass(frozen=True)
class ClusterPlan:
    """How many inference actors, and what each reserves."""

    workers: int  # the most actors (the pool grows to it as work waits)
    cpus_per_worker: float
    gpus_per_worker: float
    fixed: bool = False  # --workers given: exactly `workers` actors from the start

    @property
    def min_workers(self) -> int:
        return self.workers if self.fixed else 1


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
        return _fits(ClusterPlan(workers, 1.0, gpw, settings.workers is not None), cpus, gpus)
    if device.startswith("cuda"):
        raise UsageError(
            f"--device {device} needs GPUs on the workers: give --gpus-per-worker (the cluster "
            f"reports {gpus:g} GPUs)"
        )
    workers = settings.workers or max(1, int(cpus // 4))
    per = max(1.0, float((cpus - workers) // workers))
    return _fits(ClusterPlan(workers, per, 0.0, settings.workers is not None), cpus, gpus)


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


#: The weights check `_WeightsCheck` runs in a child process: exit 0 when the file
#: works, 3 with the refusal as JSON on stdout.
_CHECK_CHILD: Final = """
import json, sys
from mprnet_cli.errors import CheckpointError, UnsafeCheckpointError
from mprnet_cli.model.checkpoint import check_file
try:
    check_file(sys.argv[1])
except CheckpointError as exc:
    sys.stdout.write(json.dumps({"unsafe": isinstance(exc, UnsafeCheckpointError), "message": str(exc)}))
    sys.exit(3)
"""


class _WeightsCheck:
    """The driver's check of the weights file, in a child process while Ray starts.

    Fail on the driver, with the local engine's one line naming the user's file, before any
    actor runs: every tensor present with its shape and finite, RGB in and out (an actor
    failing on them would print Ray's tracebacks, some on stdout, and name its temporary
    copy). Reading the file needs torch, which would hold about 150 MB of the driver's
    memory for the whole run; a child returns it when the check ends. Should the child
    itself fail (not the file), the driver checks in-process instead.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        package_root = str(Path(__file__).resolve().parents[3])
        python_path = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        self._child = subprocess.Popen(
            [sys.executable, "-c", _CHECK_CHILD, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(python_path)},
        )

    def wait(self) -> None:
        """Return when the file works; raise `CheckpointError` (or `UnsafeCheckpointError`)."""
        out, _ = self._child.communicate()
        if self._child.returncode == 0:
            return
        refusal = _refusal(out) if self._child.returncode == 3 else None
        if refusal is None:  # the child failed, not the file: check here
            from mprnet_cli.model.checkpoint import check_file

            check_file(self._path)
            return
        unsafe, message = refusal
        raise (UnsafeCheckpointError if unsafe else CheckpointError)(message)

    def close(self) -> None:
        """Stop and reap the child unless `wait` did (the run stopped first)."""
        if self._child.returncode is None:
            self._child.kill()
            self._child.communicate()

    def __enter__(self) -> _WeightsCheck:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refusal(out: bytes) -> tuple[bool, str] | None:
    try:
        refusal = json.loads(out)
        return bool(refusal["unsafe"]), str(refusal["message"])
    except (ValueError, TypeError, KeyError):
        return None
