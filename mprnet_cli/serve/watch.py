"""`--watch`: a folder that restores itself (camera tethering, scanners, upload inboxes).

The only importer of watchfiles (the `watch` extra). What is an input, where its output
goes, skip, claim and atomic writes are the planner's rules (`mprnet_cli.jobs`), applied by
the same runner as a batch; this module only decides *when* a file is handed to it:

* At start, everything already there, like a batch (existing outputs are skipped, so a
  restart resumes without redoing finished files).
* Then each new or replaced image, once it is completely written: its size and mtime are
  unchanged since the last look and it has not been written to for `settle` seconds
  (copies, scanners and uploads write in chunks; an incomplete file would decode as
  truncated, or worse, as half an image). Empty files wait.
* A file whose output exists and is older than it was replaced: it is restored again
  (overwriting its output). One whose output is newer is done. A file that failed is
  tried again only once it changes.
* Outputs are never inputs: the scan is the batch's own (`expand_inputs`), which leaves out
  the output folder, names ending with the suffix, and hidden files (the writers' temporary
  files are hidden).

Each look is a full scan of the watched folders (stat only). watchfiles wakes it on
file-system events (inotify, FSEvents, ReadDirectoryChangesW); without it, or with
WATCHFILES_FORCE_POLLING=1 for network shares where events do not arrive, it looks every
`poll` seconds.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mprnet_cli.jobs import Job, OutputPlan, Result

SETTLE_SECONDS: Final = 2.0
POLL_SECONDS: Final = 1.0

Signature = tuple[int, int]  # size, mtime_ns


@dataclass
class _Seen:
    signature: Signature
    looks: int = 1


def _signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _output_newer(plan: OutputPlan, job: Job, signature: Signature) -> bool | None:
    """None: no output yet; True: it is newer than the input (done); False: older (replaced)."""
    target = plan.predict(job)
    if not isinstance(target, Path):
        return None
    try:
        return target.stat().st_mtime_ns >= signature[1]
    except OSError:
        return None


class Watcher:
    """The state of one `--watch` run: what was handed to the runner, what is settling."""

    def __init__(
        self,
        scan: Callable[[], Sequence[Job]],
        restore: Callable[[Sequence[Job], bool], Iterable[Result]],
        plan: OutputPlan,
        *,
        overwrite: bool = False,
        settle: float = SETTLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scan = scan
        self._restore = restore
        self.plan = plan
        self.overwrite = overwrite
        self.settle = settle
        self.clock = clock
        self.done: dict[Path, Signature] = {}  # as it was when handed to the runner
        self.settling: dict[Path, _Seen] = {}
        self.looks = 0
        self._first = True

    def look(self) -> int:
        """One scan: restore what has settled; returns how many files are still settling."""
        ready: list[tuple[Job, Signature]] = []
        now = self.clock()
        found: set[Path] = set()
        for job in self._scan():
            path = job.source
            if job.error is not None or not isinstance(path, Path):
                continue  # an empty inbox, a folder gone for a moment: nothing to do
            found.add(path)
            signature = _signature(path)
            if signature is None or self.done.get(path) == signature:
                continue
            seen = self.settling.get(path)
            if seen is None or seen.signature != signature:
                self.settling[path] = seen = _Seen(signature)
            else:
                seen.looks += 1
            quiet_for = now - signature[1] / 1e9
            if signature[0] > 0 and quiet_for >= self.settle and (seen.looks > 1 or self._first):
                ready.append((job, signature))
        for gone in set(self.settling) - found:
            del self.settling[gone]
        self.looks += 1
        first, self._first = self._first, False
        if ready:
            self._run(ready, first)
        return len(self.settling)

    def _run(self, ready: list[tuple[Job, Signature]], first: bool) -> None:
        fresh: list[Job] = []
        replaced: list[Job] = []
        for job, signature in ready:
            assert isinstance(job.source, Path)
            del self.settling[job.source]
            self.done[job.source] = signature
            newer = _output_newer(self.plan, job, signature)
            if first or newer is None:
                fresh.append(job)  # at start, existing outputs are skipped as a batch does
            elif not newer:
                replaced.append(job)
        for jobs, overwrite in ((fresh, self.overwrite), (replaced, True)):
            if jobs:
                results = self._restore(jobs, overwrite)
                with contextlib.closing(iter(results)) as each:  # type: ignore[type-var]
                    for _ in each:
                        pass


def _wakeups(
    folders: Sequence[Path], poll: float, stop: threading.Event, recursive: bool
) -> Iterator[bool]:
    """Yields when it is time to look again: True after file-system events, False on a timer."""
    force = os.environ.get("WATCHFILES_FORCE_POLLING", "").strip() not in ("", "0", "false")
    try:
        if force:
            raise ImportError
        import watchfiles
    except ImportError:
        while not stop.wait(poll):
            yield False
        return
    for changes in watchfiles.watch(
        *folders,
        stop_event=stop,
        recursive=recursive,
        rust_timeout=max(1, int(poll * 1000)),
        yield_on_timeout=True,
        debounce=50,
    ):
        yield bool(changes)


def watch(
    folders: Sequence[Path],
    watcher: Watcher,
    *,
    recursive: bool = False,
    poll: float = POLL_SECONDS,
    stop: threading.Event | None = None,
) -> None:
    """Restore what is in `folders`, then what lands there, until `stop` is set or Ctrl-C."""
    stop = stop or threading.Event()
    pending = watcher.look()
    for n, changed in enumerate(_wakeups(folders, poll, stop, recursive), 1):
        if changed or pending or not n % 10:  # a periodic look catches missed events
            pending = watcher.look()
        if stop.is_set():
            return
