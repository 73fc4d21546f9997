"""The runner seam: one `RunRequest` in, one `Result` per job out, whatever the engine.

An engine is a module with a `run(request)` function and one line in `_RUNNERS`; it is
imported only when chosen, so the optional libraries of an engine (Ray) load with it
alone. Every engine applies the planner's rules (`mprnet_cli.jobs`) and the per-image
stages of `mprnet_cli.runners.stages`, so outputs and records are the same whichever runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Final, Protocol

from mprnet_cli.choices import EngineChoice
from mprnet_cli.jobs import Callbacks, Job, Listing, OutputPlan, Result
from mprnet_cli.runners import RaySettings, load_ray
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task


@dataclass(frozen=True)
class RunRequest:
    """One restore run: what every engine is given."""

    task: Task | None
    jobs: Sequence[Job] | Listing  # a Listing streams: engines iterate it once
    plan: OutputPlan
    settings: RestoreSettings = RestoreSettings()  # noqa: RUF009 - frozen
    overwrite: bool = False
    callbacks: Callbacks = field(default_factory=Callbacks)
    notify: Callable[[str], None] | None = None  # weights messages (downloads, conversion)
    quiet: bool = False
    cluster: RaySettings = RaySettings()  # noqa: RUF009 - frozen; read by --engine ray
    stdin: BinaryIO | None = None  # the `-` INPUT (default: sys.stdin)
    stdout: BinaryIO | None = None  # the `-o -` output (default: sys.stdout)
    raise_unexpected: bool = False  # bugs raise instead of failing their file (MPRNET_DEBUG)


class Runner(Protocol):
    """An engine: restores the request's jobs, yielding each `Result` as its output is
    written (and calling `callbacks.finished` then), and stops cleanly when closed."""

    def __call__(self, request: RunRequest, /) -> Generator[Result, None, None]: ...


#: Engine -> "module:function" of its runner (imported only when chosen).
_RUNNERS: Final[dict[EngineChoice, str]] = {
    EngineChoice.LOCAL: "mprnet_cli.runners.local:run",
    EngineChoice.RAY: "mprnet_cli.runners.ray:run",
}


def get_runner(engine: EngineChoice) -> Runner:
    """The runner of `engine`; a `UsageError` naming the extra when its library is missing."""
    module_name, _, name = _RUNNERS[engine].partition(":")
    module = load_ray() if engine is EngineChoice.RAY else importlib.import_module(module_name)
    runner: Runner = getattr(module, name)
    return runner
