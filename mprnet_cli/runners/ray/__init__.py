"""Restore on a Ray cluster with Ray Data; `cluster.py` is the only module that imports ray.

The pipeline (`run` behind the runner seam, `restore_files` for the CLI's files,
`restore_dataset` for a Ray Dataset)::

    chunks -> decode (CPU tasks) -> network (actor pool, CPU or GPU) -> encode + write (CPU tasks)

* The driver screens every job with `mprnet_cli.jobs.Planner` (names, skip-existing, claims,
  stale temp files): the same rules as `--engine local`. A run whose outputs all exist
  neither resolves weights nor starts Ray. The listing streams (`jobs.Listing`): the
  driver lists and screens on a thread of its own (`files._Feed`, a bounded queue, so it
  holds a bounded number of pending inputs) while the cluster restores what is planned.
  Ray Data takes a Dataset whose rows are known when it starts, so the chunks go out in
  windows (one Dataset and one actor pool each): what is planned when the listing pauses
  for a second or ends, `files._WINDOW_CHUNKS` chunks at most. A run listed in less than
  that is one window; a longer listing pays the actor pool's start once per window.
* Work travels at the engine's grain: the pending jobs are packed into chunks of about
  `plan._CHUNK_BYTES` of input files (many small images to one chunk, a large one alone);
  each chunk is one row, one block and one task per stage, so per-task overhead is paid
  per chunk, not per image. Each task runs the shared per-image stages
  (`mprnet_cli.runners.stages`) over its chunk, one image failing alone.
* Pixels cross the object store as integers: the decoded uint8/uint16 pixels (the actor
  rebuilds the network's float input from them, bit for bit what the local engine feeds
  it), and the restored image quantised exactly as it will be stored (`stages.quantize`),
  so outputs are byte-identical to the local engine's.
* The run's `RestoreSettings` are shipped to the actors unchanged; weights are resolved
  once, on the driver (cache, download or bundled), checked in a child process while Ray
  starts (`plan._WeightsCheck`: reading them needs torch, which the driver never imports),
  and their bytes put once in the object store; each actor reads them from there and loads
  the network once.
* Decode and write tasks reserve half a CPU each (`plan._IO_CPUS`), so the CPU kept for
  I/O runs both at once: records flow while later chunks still decode.
* The actor pool grows from one actor to the cluster plan's size while work waits
  (`ActorPoolStrategy(min_size, max_size)`); `--workers` fixes its size. In-flight data is
  bounded by Ray Data's streaming executor (backpressure against this job's object-store
  budget; each actor holds at most `_TASKS_PER_ACTOR` queued chunks).
* Results stream to the driver as each chunk is written (not in input order); each
  record's callback runs then.
* Faults: a file that fails (corrupt, too big, unwritable output) is a failed record, like
  locally. A crashed actor is restarted and its task retried by Ray (Ray Data's defaults,
  unlimited); writes are atomic (and replace an existing file only with --overwrite), and
  the driver keeps one record per input, so a retried task neither loses nor duplicates an
  output. A pool that cannot fit the cluster is refused before the job starts, and a
  failure of the job itself is one `ClusterError` line. On Ctrl-C the driver stops the job
  (shutting down a Ray it started), reports the outputs its workers finished that it had
  not heard of, then removes the temporary files of the writes it had not heard back from.
* INPUT and -o may be object-store URIs (`mprnet_cli.imageio.locations.StorePath`): the driver
  lists and plans them with the same planner; decode tasks read each object through
  pyarrow.fs, write tasks write each output in one request (no temporary objects).
  Credentials come from each node's own environment.
* The files: `plan` (factory, chunk sizes, cluster plan), `stages` (the chunk and row
  tasks), `cluster` (Ray itself: actors, streaming, `restore_dataset`), `files`
  (`run`, `restore_files`).
"""

from __future__ import annotations

from mprnet_cli.runners.ray.cluster import restore_dataset
from mprnet_cli.runners.ray.files import restore_files, run
from mprnet_cli.runners.ray.plan import (
    PAYLOAD,
    ClusterPlan,
    RestorerFactory,
    cluster_plan,
    default_restorer,
)

__all__ = [
    "PAYLOAD",
    "ClusterPlan",
    "RestorerFactory",
    "cluster_plan",
    "default_restorer",
    "restore_dataset",
    "restore_files",
    "run",
]
