"""Restore on a Ray cluster with Ray Data; `cluster.py` is the only module that imports ray.

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
* The files: `plan` (settings, cluster plan), `stages` (decode/encode tasks and their
  records), `cluster` (Ray itself: actors, streaming, `restore_dataset`), `files`
  (`restore_files`, the CLI's runner).
"""

from __future__ import annotations

# The `X as X` names are not API: benchmarks/bench_ray.py and the tests reach them here,
# as they did when this package was one module.
from mprnet_cli.choices import OutputFormat as OutputFormat
from mprnet_cli.jobs import Callbacks as Callbacks
from mprnet_cli.runners.ray.cluster import _Network as _Network
from mprnet_cli.runners.ray.cluster import restore_dataset
from mprnet_cli.runners.ray.files import _FileRun as _FileRun
from mprnet_cli.runners.ray.files import restore_files
from mprnet_cli.runners.ray.plan import PAYLOAD, NetworkSettings, RestorerFactory, cluster_plan
from mprnet_cli.runners.ray.plan import ClusterPlan as ClusterPlan
from mprnet_cli.runners.ray.plan import default_restorer as default_restorer
from mprnet_cli.runners.ray.stages import _decode as _decode
from mprnet_cli.runners.ray.stages import _finish as _finish
from mprnet_cli.runners.ray.stages import _pack as _pack

__all__ = [
    "PAYLOAD",
    "NetworkSettings",
    "RestorerFactory",
    "cluster_plan",
    "restore_dataset",
    "restore_files",
]
