"""`--watch` (mprnet_cli.serve.watch): when a file is handed to the runner, and what is never.

`Watcher.look()` is driven directly with a clock the test moves, so "still being written"
and "settled" are states reached exactly; the real loop (events and polling) and the CLI
(a subprocess with the real 2 s settle time) are run with bounded waits.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mprnet_cli.inference.pipeline import RunStats
from mprnet_cli.jobs import Job, OutputPlan, Result, Status, expand_inputs, plan_outputs
from mprnet_cli.runners.local import run_batch
from mprnet_cli.serve.watch import SETTLE_SECONDS, Watcher, watch

REPO = Path(__file__).resolve().parent.parent
WAIT = 60.0


class Invert:
    """A stand-in network (1 - x), counted."""

    def __init__(self) -> None:
        self.calls = 0

    def restore_rgb(self, rgb: np.ndarray, **kw: Any) -> tuple[np.ndarray, RunStats]:
        self.calls += 1
        return 1.0 - rgb, RunStats(tiles=1)


def png(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class Clock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def settle(self) -> None:
        self.offset += SETTLE_SECONDS + 1


def make(
    inbox: Path, output: str | None = None, network: Invert | None = None
) -> tuple[Watcher, Invert, list[Result], Clock]:
    network = network or Invert()
    results: list[Result] = []
    suffix = "_derained"

    def scan() -> list[Job]:
        return expand_inputs([str(inbox)], suffix=suffix, exclude=exclude).jobs

    exclude = Path(output) if output else None
    plan: OutputPlan = plan_outputs(
        expand_inputs([str(inbox)], suffix=suffix), output, suffix=suffix
    )

    def restore(jobs: Sequence[Job], overwrite: bool) -> Any:
        for result in run_batch(jobs, network, plan, overwrite=overwrite):
            results.append(result)
            yield result

    clock = Clock()
    return Watcher(scan, restore, plan, clock=clock), network, results, clock


def test_a_file_written_in_chunks_is_restored_only_once_complete(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher, network, results, clock = make(inbox, str(tmp_path / "out"))
    data = png(1)
    watcher.look()
    with (inbox / "scan.png").open("wb") as fp:
        for start in range(0, len(data), len(data) // 4):
            fp.write(data[start : start + len(data) // 4])
            fp.flush()
            assert watcher.look() == 1  # written a moment ago: still settling
            assert watcher.look() == 1
    assert results == [] and network.calls == 0
    clock.settle()  # nothing written for longer than the settle time
    watcher.look()
    assert len(results) == 1 and results[0].status is Status.OK
    restored = np.asarray(Image.open(tmp_path / "out" / "scan_derained.png"))
    original = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(restored, 255 - original)  # the whole image, not a truncated one


def test_a_restart_resumes_without_redoing_finished_files(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.png").write_bytes(png(1))
    out = str(tmp_path / "out")
    first, _network, results, clock = make(inbox, out)
    clock.settle()
    first.look()
    assert [r.status for r in results] == [Status.OK]
    written = (tmp_path / "out" / "a_derained.png").stat().st_mtime_ns
    (inbox / "b.png").write_bytes(png(2))  # lands while nothing watches
    second, network2, results2, clock2 = make(inbox, out)
    clock2.settle()
    second.look()
    assert {Path(r.input).name: r.status for r in results2} == {
        "a.png": Status.SKIPPED,
        "b.png": Status.OK,
    }
    assert network2.calls == 1
    assert (tmp_path / "out" / "a_derained.png").stat().st_mtime_ns == written


@pytest.mark.parametrize("inside", [False, True], ids=["next-to-inputs", "output-in-inbox"])
def test_its_own_outputs_are_never_inputs(tmp_path: Path, inside: bool) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.png").write_bytes(png(1))
    watcher, network, results, clock = make(inbox, str(inbox / "out") if inside else None)
    clock.settle()
    watcher.look()
    assert len(results) == 1
    outputs = list(inbox.rglob("*_derained.png"))
    assert len(outputs) == 1
    for _ in range(3):
        clock.settle()
        assert watcher.look() == 0  # the output is not even settling
    assert len(results) == 1 and network.calls == 1


def test_a_replaced_image_is_restored_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = inbox / "a.png"
    source.write_bytes(png(1))
    watcher, _network, results, clock = make(inbox, str(tmp_path / "out"))
    clock.settle()
    watcher.look()
    output = tmp_path / "out" / "a_derained.png"
    before = output.read_bytes()
    source.write_bytes(png(2))
    later = output.stat().st_mtime_ns + 5_000_000_000  # newer than its output, whatever the fs
    os.utime(source, ns=(later, later))
    watcher.look()
    clock.offset += 10
    watcher.look()
    assert [r.status for r in results] == [Status.OK, Status.OK]
    assert output.read_bytes() != before
    assert np.array_equal(np.asarray(Image.open(output)), 255 - np.asarray(Image.open(source)))


def test_empty_and_failed_files_wait_for_a_change(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "empty.png").write_bytes(b"")
    (inbox / "broken.png").write_bytes(b"not an image")
    watcher, network, results, clock = make(inbox, str(tmp_path / "out"))
    for _ in range(3):
        clock.settle()
        watcher.look()
    assert [(Path(r.input).name, r.status) for r in results] == [("broken.png", Status.FAILED)]
    assert network.calls == 0


@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_the_loop_picks_up_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, polling: bool
) -> None:
    if polling:
        monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
    else:
        pytest.importorskip("watchfiles")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher, _network, results, _ = make(inbox, str(tmp_path / "out"))
    watcher.settle = 0.2
    stop = threading.Event()
    thread = threading.Thread(
        target=watch, args=([inbox], watcher), kwargs={"poll": 0.05, "stop": stop}
    )
    thread.start()
    try:
        tmp = inbox / ".drop.png.part"  # hidden while written, then renamed: complete at once
        tmp.write_bytes(png(3))
        tmp.rename(inbox / "drop.png")
        deadline = time.monotonic() + WAIT
        while not results and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert [Path(r.input).name for r in results] == ["drop.png"]


# --------------------------------------------------------------------------- the CLI


def _lines(stream: Any, out: list[dict[str, Any]]) -> Callable[[], None]:
    def read() -> None:
        for line in stream:
            out.append(json.loads(line))

    return read


@pytest.mark.slow
def test_cli_watch_streams_json_and_stops_on_sigterm(checkpoint: Path, tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    (inbox / "first.png").write_bytes(png(1))
    os.utime(inbox / "first.png", (time.time() - 60, time.time() - 60))  # long settled
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mprnet_cli",
            "derain",
            "--watch",
            str(inbox),
            "-o",
            str(out),
            "--json",
            "-w",
            str(checkpoint),
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records: list[dict[str, Any]] = []
    reader = threading.Thread(target=_lines(proc.stdout, records), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + WAIT
        while not records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["status"] for r in records] == ["ok"], proc.stderr
        data = png(2)
        with (inbox / "slow.png").open("wb") as fp:  # chunks 0.2 s apart: under the settle time
            for start in range(0, len(data), len(data) // 4):
                fp.write(data[start : start + len(data) // 4])
                fp.flush()
                time.sleep(0.2)
                assert len(records) == 1  # never picked up half-written
        while len(records) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(WAIT)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr
    assert [(Path(r["input"]).name, r["status"]) for r in records] == [
        ("first.png", "ok"),
        ("slow.png", "ok"),
    ]
    assert Image.open(out / "slow_derained.png").size == (64, 48)
    assert "[2] " in stderr and "2 restored" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["first_derained.png", "slow_derained.png"]


def test_cli_watch_usage_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mprnet_cli.cli import app

    photo = tmp_path / "a.png"
    photo.write_bytes(png(1))
    runner = CliRunner()
    not_a_folder = runner.invoke(app, ["derain", "--watch", str(photo)])
    assert not_a_folder.exit_code == 2 and "takes folders to watch" in not_a_folder.output
    to_stdout = runner.invoke(app, ["derain", "--watch", str(tmp_path), "-o", "-"])
    assert to_stdout.exit_code == 2
    on_ray = runner.invoke(app, ["derain", "--watch", str(tmp_path), "--engine", "ray"])
    assert on_ray.exit_code == 2 and "drop --engine ray" in on_ray.output
