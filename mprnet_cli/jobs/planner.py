"""The per-job rules (`Planner`): claims, input == output, existing outputs, unwritable
folders and the temporary files a killed run left.

The rules are in the `mprnet_cli.jobs` docstring (Rules per job).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mprnet_cli.errors import OutputError
from mprnet_cli.imageio import check_writable_folder, temp_target
from mprnet_cli.imageio.atomic import TEMP_NAME_EXTRA
from mprnet_cli.imageio.locations import StorePath, Where
from mprnet_cli.jobs.inputs import Job, Listing, _key, _why_not
from mprnet_cli.jobs.outputs import Destination, OutputPlan
from mprnet_cli.jobs.records import Result, Status, failed

#: A write's temporary file lives for the seconds it takes to write and fsync the encoded
#: bytes; one whose last change is older than this was left by a killed process.
STALE_TEMP_SECONDS: Final = 600.0


def make_output_folder(folder: Path) -> None:
    """Create an output's folder (-o DIR mirrors the input tree) or fail with `OutputError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the folder {folder} ({exc.strerror or exc}); choose another -o"
        ) from None


class _TempSweeper:
    """Removes temporary files a killed run left for the outputs this run reaches.

    Each folder is listed once (so a folder of thousands of outputs costs one scan). Only
    files older than `max_age` seconds (by mtime, checked when their output is reached) go:
    a younger one may be another live process's write in progress, which would otherwise
    fail when it moves its vanished temp file into place.
    """

    def __init__(self, max_age: float = STALE_TEMP_SECONDS) -> None:
        self.max_age = max_age
        self._by_folder: dict[Path, dict[str, list[Path]]] = {}

    def sweep(self, target: Path) -> None:
        folder = target.parent
        temps = self._by_folder.get(folder)
        if temps is None:
            temps = {}
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    name = temp_target(entry.name)
                    if name is not None:
                        temps.setdefault(name, []).append(Path(entry.path))
            self._by_folder[folder] = temps
        for tmp in temps.pop(target.name, []):
            with contextlib.suppress(OSError):  # not ours to insist on; the output is unaffected
                if time.time() - tmp.lstat().st_mtime > self.max_age:
                    tmp.unlink()


def _name_too_long(target: Path) -> str | None:
    """Why `target`'s name cannot be written here (with its temporary file's), else None."""
    try:
        limit = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # the folder is yet to be made, or no such limit is known
        limit = 255
    size = len(os.fsencode(target.name))
    if size + TEMP_NAME_EXTRA <= limit:
        return None
    return (
        f"its output name is {size} bytes long, and this file system takes at most "
        f"{limit - TEMP_NAME_EXTRA} for an output (its temporary file's name is "
        f"{TEMP_NAME_EXTRA} bytes longer); rename the input, use a shorter --suffix or "
        "-o FILE"
    )


@dataclass(frozen=True)
class Screened:
    """A job the planner let through, with the output it is to write (claimed)."""

    job: Job
    target: Where | None  # None: not predictable (unreadable file); decoding will say why


@dataclass
class Planner:
    """One run's claims and checks: the rules of the module docstring, for any runner.

    `jobs` is the run's `Listing` (streamed: the planner keeps nothing per pending input,
    and with one folder argument its claims last for one input folder, where every
    collision happens) or a list of jobs (all claims kept)."""

    plan: OutputPlan
    jobs: Sequence[Job] | Listing
    overwrite: bool = False
    max_temp_age: float = STALE_TEMP_SECONDS
    _claims: dict[str, str] = field(default_factory=dict)
    _inputs: set[str] = field(default_factory=set)
    _folders: dict[str, str | None] = field(default_factory=dict)  # folder -> why unwritable
    _sweeper: _TempSweeper = field(init=False)
    _listed: dict[StorePath, dict[StorePath, str]] = field(default_factory=dict)
    _real_folders: dict[str, str] = field(default_factory=dict)  # `_key`'s cache

    _claims_folder: object = None  # the input folder the claims are for (one folder argument)
    _left: set[object] = field(default_factory=set)  # the input folders claimed in so far

    def __post_init__(self) -> None:
        if not isinstance(self.jobs, Listing):
            self._inputs = {
                self._key(j.source) for j in self.jobs if j.source is not None and j.error is None
            }
        self._sweeper = _TempSweeper(self.max_temp_age)

    def _key(self, path: Where) -> str:
        return _key(path, self._real_folders)

    def exists_ahead(self, job: Job) -> bool:
        """Its predicted output exists already (and is not the input): no need to decode it.

        Only reads the file system, so a decode thread may ask; `check` settles it."""
        source = job.source
        if self.overwrite or source is None or not source.is_file():
            return False
        predicted = self.plan.predict(job)
        try:
            return (
                predicted is not None
                and predicted.exists()
                and self._key(predicted) != self._key(source)
            )
        except OSError:  # a name too long, say: `check` fails this job alone, on the main thread
            return False

    def check(self, job: Job, target: Where) -> Result | None:
        """Collisions, input == output and existing outputs; None when the job may write.

        Claims `target` for `job` (a later job with the same output fails), and removes the
        stale temporary files a killed run left for it.
        """
        key = self._key(target)
        if isinstance(target, StorePath):
            return self._check_object(job, target, key)
        too_long = _name_too_long(target)
        if too_long is not None:
            return failed(job, too_long, target)
        self._sweeper.sweep(target)
        verdict = self._claim(job, target, key)
        if verdict is not None:
            return verdict
        if target.is_dir():
            return failed(job, f"the output {target} is a folder", target)
        if target.exists() and not target.is_file():
            return failed(
                job,
                f"the output {target} is not a regular file (a device, pipe or socket); "
                "give a file name, or -o - and redirect stdout",
                target,
            )
        if not self.overwrite and os.path.lexists(target):
            return Result(job.label, str(target), Status.SKIPPED)
        return self._another_input(job, target, key)

    def _claim(self, job: Job, target: Where, key: str) -> Result | None:
        """Claim `target` for `job`; the failure when another job or the input holds it."""
        if isinstance(self.jobs, Listing) and self.jobs.one_tree and job.source is not None:
            # Walked one folder after another: two inputs of different folders never share
            # an output (-o DIR mirrors the folders), so a folder's claims go with it.
            folder = job.source.parent
            if folder != self._claims_folder:
                self._claims.clear()
                self._claims_folder = folder
                if folder in self._left:
                    self._reclaim(self.jobs, job)
                self._left.add(folder)
        earlier = self._claims.get(key)
        if earlier is not None:
            return failed(
                job,
                f"its output {target} is also the output of {earlier}; use -o with "
                "separate folders or --suffix to tell them apart",
                target,
            )
        self._claims[key] = job.label
        if job.source is not None and key == self._key(job.source):
            return failed(job, "the output would replace the input; change --suffix or -o", target)
        return None

    def _reclaim(self, listing: Listing, job: Job) -> None:
        """Back in a folder left before (the Ray driver replans the jobs whose decoding
        settled another name, after the rest): its inputs' claims as planned then, from
        their names (`OutputPlan.guess`, as the Ray driver plans), except `job`'s own,
        which it has given back."""
        assert job.source is not None
        for other in listing.folder_jobs(job.source.parent, job.root):
            target = self.plan.guess(other)
            if target is None or other.label == job.label:
                continue
            self._claims.setdefault(self._key(target), other.label)

    def _another_input(
        self, job: Job, target: Where, key: str, *, exists: bool | None = None
    ) -> Result | None:
        if isinstance(self.jobs, Listing):
            clash = self.jobs.is_input(target, exists=exists)
        else:
            clash = key in self._inputs
        if clash:
            return failed(
                job,
                f"its output {target} is another input of this run; change --suffix or -o",
                target,
            )
        return None

    def _check_object(self, job: Job, target: StorePath, key: str) -> Result | None:
        """`check` for an object store: no temp objects to sweep, no special files; each
        output prefix is listed once (not one request per output)."""
        verdict = self._claim(job, target, key)
        if verdict is not None:
            return verdict
        folder = target.parent
        if folder not in self._listed:
            try:
                self._listed[folder] = dict(folder.listing(recursive=False))
            except FileNotFoundError:
                self._listed[folder] = {}
            except OSError as exc:
                return failed(job, f"cannot list {folder}: {_why_not(exc)}", target)
        kind = self._listed[folder].get(target)
        if kind == "dir":
            return failed(job, f"the output {target} is a folder", target)
        if kind == "file" and not self.overwrite:
            return Result(job.label, str(target), Status.SKIPPED)
        return self._another_input(job, target, key, exists=kind == "file")

    def release(self, target: Where) -> None:
        """Forget a claim (the runner claims the settled name again after decoding)."""
        self._claims.pop(self._key(target), None)

    def folder_problem(self, folder: Where) -> str | None:
        """Why nothing can be written in `folder` (checked once per folder), else None."""
        if isinstance(folder, StorePath):  # prefixes need no creating: the bucket must exist
            folder = folder.bucket
        key = self._key(folder)
        if key not in self._folders:
            if isinstance(folder, StorePath):
                self._folders[key] = folder.problem()
                return self._folders[key]
            try:
                # -o DIR and -o new/sub/out.png alike: the folders the user named are made
                create = self.plan.destination in (Destination.DIRECTORY, Destination.FILE)
                check_writable_folder(folder, create=create)
                self._folders[key] = None
            except OutputError as exc:
                self._folders[key] = str(exc)
        return self._folders[key]

    def screen(self, job: Job, *, sniff: bool = True) -> Result | Screened:
        """A job's fate from its name alone: its record (failed, skipped) or its claimed target.

        A job whose output cannot be predicted (its file is unreadable) goes through with
        no target; decoding it reports why. `sniff` False: the output's format is guessed
        from the input's extension instead of its first bytes (no read per input); the
        runner's decode stage settles it and comes back to `screen_settled` if it differs.
        """
        if job.error is not None:
            return failed(job, job.error)
        predicted = self.plan.predict(job) if sniff else self.plan.guess(job)
        if predicted is None:
            return Screened(job, None)
        return self.screen_settled(job, predicted)

    def screen_settled(self, job: Job, predicted: Where) -> Result | Screened:
        """`screen` for an output already known (decoded, or predicted)."""
        verdict = self.check(job, predicted)
        if verdict is not None:
            return verdict
        problem = self.folder_problem(predicted.parent)
        if problem is not None:
            return failed(job, problem, predicted)
        return Screened(job, predicted)
