"""What the CLI says: one-line messages, typed errors to exit codes, JSON lines, bars.

One output sink for every command, so stdout stays data and stderr stays messages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn, TextIO

import typer

if TYPE_CHECKING:
    from rich.progress import Progress

    from mprnet_cli.errors import MprnetError
    from mprnet_cli.jobs import Job, Result

DEBUG_ENV = "MPRNET_DEBUG"
INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's convention


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def plain(text: str) -> str:
    """One line whatever the text holds: a file name with a newline or an escape sequence
    can neither forge an `mprnet: ...` line nor drive the terminal."""
    from mprnet_cli.host.stdio import printable

    return printable(text.strip())


def say(message: str, *, quiet: bool = False) -> None:
    """A human message: always stderr, so stdout stays clean for data."""
    if not quiet:
        print(plain(message), file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"mprnet: error: {plain(message)}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Map typed errors to one stderr line and their exit code (traceback only in debug)."""
    from mprnet_cli.errors import (
        DISK_FULL_ERRNOS,
        MprnetError,
        Terminated,
        describe_os_error,
    )

    try:
        yield
    except typer.Exit:
        raise
    except MprnetError as exc:
        if debug_enabled():
            raise
        fail(str(exc), _exit_code(exc))
    except KeyboardInterrupt as exc:
        if debug_enabled():
            raise
        if isinstance(exc, Terminated):
            fail(f"terminated ({Terminated.signal_name})", Terminated.exit_code)
        fail("interrupted", INTERRUPTED_EXIT)
    except Exception as exc:
        if debug_enabled():
            raise
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            fail(describe_os_error(exc))  # a user-facing condition wherever it strikes
        fail(
            f"unexpected {type(exc).__name__}: {exc}. This is a bug in mprnet: rerun with "
            f"{DEBUG_ENV}=1 for the traceback and report it"
        )


def _exit_code(exc: MprnetError) -> int:
    return int(getattr(exc, "exit_code", 1))


def progress_enabled(
    quiet: bool, stream: TextIO | None = None, env: Mapping[str, str] | None = None
) -> bool:
    """Bars only for a person at a terminal: not with --quiet, NO_COLOR, TERM=dumb or a pipe."""
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    if quiet or env.get("NO_COLOR") or env.get("TERM", "") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class Reporter:
    """Everything a batch says on stderr: bars (files, tiles of big images), lines, summary."""

    def __init__(self, total: int | None, *, quiet: bool, bar: bool, count: bool = False) -> None:
        self.quiet = quiet
        self.count = count  # --watch: each line starts with the running count, [n]
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self._bar: Progress | None = None
        self._clip_start = 0.0
        if bar:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description:<28.28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                redirect_stdout=False,  # stdout is data (JSON lines, image bytes), never the bar's
            )
            self._files = self._bar.add_task("images", total=total)
            self._tiles = self._bar.add_task("  tiles", total=1, visible=False)

    def __enter__(self) -> Reporter:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def listed(self, total: int) -> None:
        """The listing has ended: the bar's total is known (None until then: n/?)."""
        if self._bar is not None:
            self._bar.update(self._files, total=total)

    def line(self, text: str) -> None:
        text = plain(text)
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.line(text)

    def started(self, job: Job, width: int, height: int) -> None:
        if self._bar is not None:
            self._bar.update(self._files, description=job.label)
            self._bar.update(self._tiles, description="  tiles", visible=False, completed=0)

    def tiles(self, done: int, total: int) -> None:
        if self._bar is not None and total > 1:
            self._bar.update(self._tiles, total=total, completed=done, visible=True)

    def frames(self, done: int, total: int | None) -> None:
        """A clip's frames: the bar shows frames/s and, with a known count, the ETA."""
        if self._bar is None:
            return
        import time

        if done <= 1:
            self._clip_start = time.perf_counter()
        elapsed = time.perf_counter() - self._clip_start
        rate = f"{(done - 1) / elapsed:.1f}" if done > 1 and elapsed > 0 else "-"
        self._bar.update(
            self._tiles,
            description=f"  frames {rate}/s",
            total=total,
            completed=done,
            visible=True,
        )

    def finished(self, result: Result) -> None:
        from mprnet_cli.cli.values import plural

        status = result.status.value
        self.counts[status] += 1
        if self._bar is not None:
            self._bar.advance(self._files)
        source = "<stdin>" if result.input == "-" else result.input
        if self.count:
            source = f"[{sum(self.counts.values())}] {source}"
        if status == "failed":
            self.line(f"mprnet: {source}: {result.error or 'failed'}")
            return
        for warning in result.warnings:
            self.note(f"mprnet: warning: {warning}")
        if status == "ok":  # with or without bars: where each output went
            target = "<stdout>" if result.output == "-" else result.output
            if result.device is None:  # found on disk as a run stopped: no timings known
                self.note(f"{source} -> {target}")
                return
            self.note(
                f"{source} -> {target} "
                f"({result.seconds or 0:.1f} s on {result.device}, {result.backend} "
                f"{result.precision}, {plural(result.tiles or 0, 'tile')})"
            )
        else:
            self.note(f"{source}: skipped, {result.output} exists")

    def summary(self, *, interrupted: bool = False, why: str = "interrupted") -> None:
        c = self.counts
        skipped = f"{c['skipped']} skipped" + (
            " (exist; --overwrite to replace)" if c["skipped"] else ""
        )
        text = f"{c['ok']} restored, {skipped}, {c['failed']} failed"
        if interrupted:
            text += f"; {why}: run the same command again to resume"
        self.note(text)


def print_json(line: str) -> None:
    """One JSON line on stdout; a reader that went away (`| head`) stops the run cleanly."""
    from mprnet_cli.errors import OutputError, describe_os_error
    from mprnet_cli.host.stdio import write_stdout

    try:
        write_stdout(line + "\n")
    except BrokenPipeError:
        raise OutputError("stdout was closed before all JSON lines were written") from None
    except OSError as exc:  # e.g. `--json > /dev/full`
        raise OutputError(f"stdout: {describe_os_error(exc)}") from None
