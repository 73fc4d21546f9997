"""The job planner: INPUT arguments -> jobs, output names, and the per-job rules every runner applies.

A runner (the threaded one in `mprnet_cli.runners.local`, the Ray one in `mprnet_cli.runners.ray`)
is an executor: it decodes, restores and writes. What the inputs are, what each output is
called, whether it may be written (collisions, input == output, an existing output without
--overwrite, an unwritable folder), which temporary files a killed run left for it, and
what its `Result` record says are decided here, once, so the runners cannot drift apart.
No threads, no Ray, no torch, no messages: plain bookkeeping (and the file-system looks it
needs). The `Planner` holds one run's state (claimed outputs, checked folders).

Inputs (`expand_inputs`)
------------------------
* A file named explicitly is always attempted, whatever its extension (a missing one fails
  with a clear message); a pipe or device is read as a stream. Among several files named
  one by one (a shell's glob), those that look like our own outputs are left out with one
  note unless `overwrite`, so a rerun resumes. `-` is stdin and must be the only INPUT.
* A folder contributes its direct images; with `recursive` also those of its subfolders.
  Images are recognised by extension (`IMAGE_EXTENSIONS`, case-insensitive). Hidden files and
  folders (leading dot), the output folder, and files that look like our own outputs (stem
  ending with the suffix) are left out, so that running the same command again resumes
  instead of restoring the outputs. Without `recursive`, a note counts the subfolders
  left out. Folders are searched with a stack (any depth), unreadable ones warned about.
* An argument containing `*`, `?` or `[` that is not an existing path is a glob, expanded
  here with `glob.glob(recursive=True)` (so `**` works) when the shell did not; its matches
  are filtered like a folder's files, and folders it matches are scanned like folders;
  a folder the glob could not look into is warned about (glob itself is silent).
* Duplicates (same real path) are dropped; order is argument order, then sorted paths.
* Listed lazily (`Listing`): a folder is read with `os.scandir`, its names sorted, and its
  jobs yielded before the next folder is read, so the first job starts while the walk
  goes on. Nothing is kept per listed input: duplicates are told from the folder
  arguments' reach (a file is one of a walk's when its real path lies below the folder
  through searchable folders) and from the keys of inputs met one by one (files named,
  glob matches, symbolic links, objects). The names of the folder being listed are held
  while its jobs go out (~70 B each). `expand_inputs` is the same, listed into a list.
* An object-store URI (`s3://`, `gs://`, `abfs://`: a `locations.StorePath`) follows the
  same rules: a prefix is a folder, `-r` descends, globs are matched segment by segment,
  the same extension filter. Only the Ray engine reads and writes them.

Outputs (`plan_outputs`, `OutputPlan`)
--------------------------------------
* Names are `<stem><suffix><ext>`. `ext` comes from the written format; when that is the
  input's own format the input's spelling is kept (`IMG_1.JPG` -> `IMG_1_derained.JPG`),
  otherwise `.png`, `.jpg`, `.webp` or `.tif`.
* No `-o`: next to each input. `-o DIR`: the tree of each input below the folder it was
  found in (a folder argument, a glob's fixed leading folders, or a file's own folder) is
  mirrored under DIR. `-o FILE` (one file or stdin INPUT only): exactly that name, its
  format from its extension. `-o -`: stdout (one file or stdin INPUT only).
* With `--format same` the name depends on the decoded image; it is predicted from the
  file's magic bytes so existing outputs are skipped before decoding, and settled after.

Rules per job (`Planner`)
-------------------------
* `check(job, target)`: a name too long for the file system (with its temporary file's)
  fails that job alone; the output is claimed by one job only (a second one fails naming
  the first), never the input itself, another input (one the listing has listed or
  will list: `Listing.is_input`, so an output written into a folder still to be walked
  is not restored as an input of the same run), a folder or a special file; an
  existing output is skipped unless --overwrite; temporary files a killed run left for it
  are removed once `STALE_TEMP_SECONDS` old.
* `folder_problem(folder)`: the output folder is created (-o DIR, -o new/dir/FILE) and
  test-written once, so
  an unwritable output fails before any restore time is spent.
* `screen(job)`: the rules applied to the output predicted before decoding, for runners
  that plan ahead of decoding (Ray).
* With a `Listing` of one folder argument, claims last for one input folder (two inputs
  of different folders never share an output), so the planner's memory does not grow
  with the run; with several arguments every claim is kept (one entry per output).
"""

from __future__ import annotations

from mprnet_cli.imageio import IMAGE_EXTENSIONS
from mprnet_cli.jobs.inputs import STDIN_ARG, Expansion, Job, Listing, expand_inputs
from mprnet_cli.jobs.outputs import (
    STDOUT,
    Destination,
    OutputPlan,
    Target,
    output_name,
    plan_outputs,
)
from mprnet_cli.jobs.planner import STALE_TEMP_SECONDS, Planner, Screened, make_output_folder
from mprnet_cli.jobs.records import (
    JSON_FIELDS,
    Callbacks,
    RestorerLike,
    Result,
    Status,
    failed,
    failed_at_write,
    image_notes,
    reason,
    restored,
    skipped_at_write,
    unexpected,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "JSON_FIELDS",
    "STALE_TEMP_SECONDS",
    "STDIN_ARG",
    "STDOUT",
    "Callbacks",
    "Destination",
    "Expansion",
    "Job",
    "Listing",
    "OutputPlan",
    "Planner",
    "RestorerLike",
    "Result",
    "Screened",
    "Status",
    "Target",
    "expand_inputs",
    "failed",
    "failed_at_write",
    "image_notes",
    "make_output_folder",
    "output_name",
    "plan_outputs",
    "reason",
    "restored",
    "skipped_at_write",
    "unexpected",
]
