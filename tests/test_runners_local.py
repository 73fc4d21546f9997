"""Tests for mprnet_cli.runners.local (the local engine): jobs from arguments, output names, and the overlapped runner.

Most runner tests use a stand-in restorer (1 - x, instant) so that they test the batch
logic, not the network; one test runs a tiny real MPRNet through `Restorer`.
"""

from __future__ import annotations

import errno
import io
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from mprnet_cli import imageio as mio
from mprnet_cli.errors import OutOfMemoryError, UsageError
from mprnet_cli.imageio import OutputFormat, read_image
from mprnet_cli.inference.pipeline import RunStats
from mprnet_cli.jobs import (
    JSON_FIELDS,
    STALE_TEMP_SECONDS,
    Callbacks,
    Destination,
    Expansion,
    Job,
    Listing,
    OutputPlan,
    Result,
    Status,
    expand_inputs,
    output_name,
    plan_outputs,
)
from mprnet_cli.runners.local import run_batch

SUFFIX = "_derained"


# --------------------------------------------------------------------------- helpers


def save(
    path: Path, size: tuple[int, int] = (24, 20), mode: str = "RGB", fmt: str | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # same on every run
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, fmt)
    return path


NETWORK_SECONDS = 10.0  # what the Fake network reports; far above any decode or write here


class Fake:
    """Instant stand-in for Restorer: 1 - x, with hooks for failures and interrupts."""

    def __init__(self, on_call: Callable[[int], None] | None = None) -> None:
        self.calls = 0
        self.on_call = on_call

    def restore_rgb(
        self,
        rgb: npt.NDArray[np.float32],
        *,
        progress: Callable[[int, int], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> tuple[npt.NDArray[np.float32], RunStats]:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        if progress is not None:
            progress(1, 2)
            progress(2, 2)
        return (1.0 - rgb).astype(np.float32), RunStats(
            tiles=2, device="fake", seconds=NETWORK_SECONDS
        )


def names(jobs: list[Job]) -> list[str]:
    return [j.label for j in jobs]


def run(
    args: list[str],
    output: str | None = None,
    *,
    restorer: Any = None,
    recursive: bool = False,
    fmt: OutputFormat = OutputFormat.SAME,
    suffix: str = SUFFIX,
    **kw: Any,
) -> list[Result]:
    exclude = Path(output) if output not in (None, "-") else None
    overwrite = kw.get("overwrite", False)  # as the CLI passes it to both
    # streamed, as the CLI runs it (`expand_inputs` is the same rules, listed whole)
    listing = Listing(
        args, recursive=recursive, suffix=suffix, exclude=exclude, overwrite=overwrite
    )
    plan = plan_outputs(listing, output, suffix=suffix, fmt=fmt)
    return list(run_batch(listing, restorer or Fake(), plan, **kw))


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture()
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- expansion


def test_folder_gives_its_direct_images_sorted_and_recursion_adds_subfolders(cwd: Path) -> None:
    for name in ["b.png", "a.JPG", "c.webp", "sub/d.tif", "sub/deep/e.bmp"]:
        save(cwd / "in" / name, fmt="JPEG" if name.endswith("JPG") else None)
    (cwd / "in" / "notes.txt").write_text("not an image")
    save(cwd / "in" / ".hidden.png")
    save(cwd / "in" / ".cache" / "f.png")
    save(cwd / "in" / "a_derained.png")  # an earlier output: not an input again

    flat = expand_inputs(["in"], suffix=SUFFIX)
    assert names(flat.jobs) == ["in/a.JPG", "in/b.png", "in/c.webp"]
    assert not flat.single_file
    deep = expand_inputs(["in"], recursive=True, suffix=SUFFIX)
    assert names(deep.jobs) == [
        "in/a.JPG",
        "in/b.png",
        "in/c.webp",
        "in/sub/d.tif",
        "in/sub/deep/e.bmp",
    ]
    assert all(j.root == Path("in") for j in deep.jobs)
    assert deep.jobs[-1].relative == Path("sub/deep/e.bmp")


def test_explicit_files_are_always_attempted_and_duplicates_dropped(cwd: Path) -> None:
    save(cwd / "a.png")
    (cwd / "notes.txt").write_text("x")
    exp = expand_inputs(["a.png", "notes.txt", "missing.png", "./a.png", "."], suffix=SUFFIX)
    assert names(exp.jobs) == ["a.png", "notes.txt", "missing.png"]
    assert all(j.error is None for j in exp.jobs)  # even notes.txt and missing.png
    assert expand_inputs(["a.png"], suffix=SUFFIX).single_file
    assert expand_inputs(["missing.png"], suffix=SUFFIX).single_file


def test_output_folder_inside_the_input_tree_is_not_scanned(cwd: Path) -> None:
    save(cwd / "in" / "a.png")
    save(cwd / "in" / "out" / "a_x.png")
    exp = expand_inputs(["in"], recursive=True, suffix="_x", exclude=Path("in/out"))
    assert names(exp.jobs) == ["in/a.png"]
    exp = expand_inputs(["in"], recursive=True, suffix="", exclude=Path("in/out"))
    assert names(exp.jobs) == ["in/a.png"]


def test_globs_are_expanded_when_the_shell_did_not(cwd: Path) -> None:
    save(cwd / "p" / "a.jpg", fmt="JPEG")
    save(cwd / "p" / "x" / "b.jpg", fmt="JPEG")
    save(cwd / "p" / "x" / "c.png")
    save(cwd / "p" / "x" / "b_derained.jpg", fmt="JPEG")
    exp = expand_inputs(["p/**/*.jpg"], suffix=SUFFIX)
    assert names(exp.jobs) == ["p/a.jpg", "p/x/b.jpg"]
    assert {j.root for j in exp.jobs} == {Path("p")}
    assert exp.jobs[1].relative == Path("x/b.jpg")
    assert not exp.single_file

    (nothing,) = expand_inputs(["p/*.gif"], suffix=SUFFIX).jobs
    assert nothing.label == "p/*.gif" and nothing.error and "match" in nothing.error

    literal = save(cwd / "q[1].png")  # exists: a name, not a pattern
    (job,) = expand_inputs([str(literal.name)], suffix=SUFFIX).jobs
    assert job.source == Path("q[1].png") and job.error is None


def test_empty_folder_and_stdin_rules(cwd: Path) -> None:
    (cwd / "empty" / "sub").mkdir(parents=True)
    save(cwd / "empty" / "sub" / "a.png")
    (job,) = expand_inputs(["empty"], suffix=SUFFIX).jobs
    assert job.error and "-r" in job.error
    assert names(expand_inputs(["empty"], recursive=True, suffix=SUFFIX).jobs) == [
        "empty/sub/a.png"
    ]
    stdin = expand_inputs(["-"], suffix=SUFFIX)
    assert stdin.single_file and stdin.jobs[0].source is None and stdin.jobs[0].label == "-"
    with pytest.raises(UsageError, match="only INPUT"):
        expand_inputs(["-", "a.png"])
    with pytest.raises(UsageError):
        expand_inputs([])


# --------------------------------------------------------------------------- output names


@pytest.mark.parametrize(
    ("source", "fmt", "expected"),
    [
        ("IMG_1.JPG", OutputFormat.JPEG, "IMG_1_derained.JPG"),
        ("a.jpeg", OutputFormat.JPEG, "a_derained.jpeg"),
        ("a.tiff", OutputFormat.TIFF, "a_derained.tiff"),
        ("a.bmp", OutputFormat.PNG, "a_derained.png"),
        ("a.png", OutputFormat.TIFF, "a_derained.tif"),
        ("a.jpg", OutputFormat.WEBP, "a_derained.webp"),
        ("archive.v2.png", OutputFormat.PNG, "archive.v2_derained.png"),
    ],
)
def test_output_name(source: str, fmt: OutputFormat, expected: str) -> None:
    assert output_name(Job(Path("x") / source), SUFFIX, fmt) == expected


def single(path: str = "a.png") -> Expansion:
    return Expansion([Job(Path(path), root=Path())], single_file=True)


def test_plan_outputs_rules(tmp_path: Path) -> None:
    many = Expansion([Job(Path("a.png")), Job(Path("b.png"))], single_file=False)
    assert plan_outputs(single(), None, suffix=SUFFIX).destination is Destination.NEXT_TO_INPUT
    assert plan_outputs(single(), "-", suffix=SUFFIX).destination is Destination.STDOUT
    plan = plan_outputs(single(), str(tmp_path / "c.JPEG"), suffix=SUFFIX)
    assert (plan.destination, plan.format) == (Destination.FILE, OutputFormat.JPEG)
    plan = plan_outputs(single(), str(tmp_path / "noext"), suffix=SUFFIX, fmt=OutputFormat.TIFF)
    assert (plan.destination, plan.format) == (Destination.FILE, OutputFormat.TIFF)
    for folder in (str(tmp_path), str(tmp_path / "new") + "/"):
        assert plan_outputs(single(), folder, suffix=SUFFIX).destination is Destination.DIRECTORY
    assert plan_outputs(many, str(tmp_path / "x"), suffix=SUFFIX).destination is (
        Destination.DIRECTORY
    )

    stdin = Expansion([Job(None)], single_file=True)
    (tmp_path / "file.png").write_bytes(b"")
    bad: list[tuple[Expansion, str, str, OutputFormat]] = [
        (stdin, "", "needs -o", OutputFormat.SAME),
        (many, "-", "exactly one", OutputFormat.SAME),
        (single(), str(tmp_path / "c.bmp"), "cannot write .bmp", OutputFormat.SAME),
        (single(), str(tmp_path / "c.jpg"), "--format", OutputFormat.PNG),
        (many, str(tmp_path / "file.png"), "must be a folder", OutputFormat.SAME),
    ]
    for exp, out, match, fmt in bad:
        with pytest.raises(UsageError, match=match):
            plan_outputs(exp, out or None, suffix=SUFFIX, fmt=fmt)
    with pytest.raises(UsageError, match="separator"):
        plan_outputs(single(), None, suffix="/x")


def test_directory_output_mirrors_each_input_tree(cwd: Path) -> None:
    for name in ["in/a.png", "in/sub/b.png", "other/c.png"]:
        save(cwd / name)
    exp = expand_inputs(["in", "other/c.png", "other/*.png"], recursive=True, suffix=SUFFIX)
    plan = plan_outputs(exp, "out", suffix=SUFFIX)
    targets = [plan.predict(j) for j in exp.jobs]
    assert targets == [
        Path("out/a_derained.png"),
        Path("out/sub/b_derained.png"),
        Path("out/c_derained.png"),
    ]
    glob_exp = expand_inputs(["**/b.png"], suffix=SUFFIX)
    assert plan_outputs(glob_exp, "out", suffix=SUFFIX).predict(glob_exp.jobs[0]) == Path(
        "out/in/sub/b_derained.png"
    )


def test_same_format_name_is_predicted_from_content_not_extension(cwd: Path) -> None:
    png_named_jpg = save(cwd / "a.jpg", fmt="PNG")
    gif = cwd / "b.gif"
    Image.new("P", (8, 8)).save(gif)
    plan = OutputPlan(Destination.NEXT_TO_INPUT, suffix=SUFFIX)
    assert plan.predict(Job(png_named_jpg)) == cwd / "a_derained.png"
    assert plan.predict(Job(gif)) == cwd / "b_derained.png"
    assert plan.predict(Job(cwd / "missing.jpg")) is None
    decoded = read_image(png_named_jpg)
    assert plan.resolve(Job(png_named_jpg), decoded.info)[0] == cwd / "a_derained.png"


# --------------------------------------------------------------------------- runner


def test_batch_with_a_corrupt_file_reports_it_and_finishes_the_rest(cwd: Path) -> None:
    save(cwd / "in" / "a.png", mode="RGBA")
    (cwd / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    save(cwd / "in" / "c.jpg", fmt="JPEG")
    started: list[tuple[str, int, int]] = []
    finished: list[str] = []
    tiles: list[tuple[int, int]] = []
    callbacks = Callbacks(
        started=lambda job, w, h: started.append((job.label, w, h)),
        tiles=lambda d, t: tiles.append((d, t)),
        finished=lambda r: finished.append(r.input),
    )
    results = run(["in"], callbacks=callbacks)
    assert [(r.input, r.status) for r in results] == [
        ("in/a.png", Status.OK),
        ("in/b.png", Status.FAILED),
        ("in/c.jpg", Status.OK),
    ]
    ok = results[0]
    assert (ok.output, ok.width, ok.height, ok.device, ok.tiles) == (
        "in/a_derained.png",
        24,
        20,
        "fake",
        2,
    )
    # A record's time is the whole job's: the network's own plus decoding and writing.
    assert ok.seconds is not None and NETWORK_SECONDS < ok.seconds < 2 * NETWORK_SECONDS
    assert results[1].error and not results[1].error.startswith("in/b.png")
    assert results[1].output is None
    assert started == [("in/a.png", 24, 20), ("in/c.jpg", 24, 20)]  # only what is restored
    assert finished == [r.input for r in results]
    assert tiles.count((2, 2)) == 2
    out = np.asarray(Image.open(cwd / "in" / "a_derained.png"))
    src = np.asarray(Image.open(cwd / "in" / "a.png"))
    assert out.shape == (20, 24, 4) and np.array_equal(out[..., 3], src[..., 3])
    assert np.array_equal(out[..., :3], 255 - src[..., :3])
    assert Image.open(cwd / "in" / "c_derained.jpg").format == "JPEG"
    assert all(tuple(r.to_json()) == JSON_FIELDS for r in results)
    assert results[1].to_json()["status"] == "failed"


def test_rerun_skips_existing_outputs_without_decoding_or_loading_weights(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["a.png", "b.jpg", "c.tif"]:
        save(cwd / "in" / name)
    assert [r.status for r in run(["in"], "out")] == [Status.OK] * 3
    mtimes = [p.stat().st_mtime_ns for p in sorted((cwd / "out").iterdir())]

    decodes: list[object] = []
    monkeypatch.setattr("mprnet_cli.runners.stages.read_image", lambda *a, **k: decodes.append(a))

    def no_weights() -> Fake:
        raise AssertionError("weights loaded for a run with nothing to do")

    again = run(["in"], "out", restorer=no_weights)
    assert [r.status for r in again] == [Status.SKIPPED] * 3
    assert [r.output for r in again] == [
        "out/a_derained.png",
        "out/b_derained.jpg",
        "out/c_derained.tif",
    ]
    assert decodes == []
    assert [p.stat().st_mtime_ns for p in sorted((cwd / "out").iterdir())] == mtimes

    monkeypatch.undo()
    monkeypatch.chdir(cwd)
    replaced = run(["in"], "out", overwrite=True)
    assert [r.status for r in replaced] == [Status.OK] * 3


def test_unpredictable_names_are_skipped_after_decoding(cwd: Path) -> None:
    save(cwd / "a.png")
    save(cwd / "out.png")
    exp = expand_inputs(["-"])
    plan = plan_outputs(exp, "out.png", suffix=SUFFIX)
    stdin = io.BytesIO((cwd / "a.png").read_bytes())
    fake = Fake()
    (result,) = run_batch(exp.jobs, fake, plan, stdin=stdin)
    assert (result.status, result.width, fake.calls) == (Status.SKIPPED, 24, 0)


def test_collisions_and_output_equal_to_input_fail_instead_of_overwriting(cwd: Path) -> None:
    save(cwd / "a" / "x.png")
    save(cwd / "b" / "x.png")
    first = run(["a/x.png", "b/x.png"], "out")
    assert [r.status for r in first] == [Status.OK, Status.FAILED]
    assert first[1].error and "a/x.png" in first[1].error
    again = run(["a/x.png", "b/x.png"], "out")
    assert [r.status for r in again] == [Status.SKIPPED, Status.FAILED]

    same = run(["a/x.png"], suffix="", overwrite=True)
    assert same[0].status is Status.FAILED and "replace the input" in (same[0].error or "")

    save(cwd / "c" / "y.png")
    save(cwd / "c" / "y_derained.png")
    both = run(["c/y.png", "c/y_derained.png"], overwrite=True)
    assert [r.status for r in both] == [Status.FAILED, Status.OK]
    assert "another input" in (both[0].error or "")

    format_clash = run(["c/y.png", "a/x.png"], "out2", fmt=OutputFormat.PNG)
    assert [r.status for r in format_clash] == [Status.OK, Status.OK]


def test_restore_errors_fail_one_file_and_bugs_are_reported_or_raised(cwd: Path) -> None:
    for name in "abc":
        save(cwd / f"{name}.png")

    def oom_on_second(n: int) -> None:
        if n == 2:
            raise OutOfMemoryError("not enough memory even with 64px tiles on the CPU")

    results = run(["a.png", "b.png", "c.png"], restorer=Fake(oom_on_second))
    assert [r.status for r in results] == [Status.OK, Status.FAILED, Status.OK]
    assert "memory" in (results[1].error or "")

    def bug(n: int) -> None:
        raise RuntimeError("boom")

    for p in cwd.glob("*_derained.png"):
        p.unlink()
    (failed, *_rest) = run(["a.png", "b.png"], restorer=Fake(bug))
    assert failed.status is Status.FAILED and "bug" in (failed.error or "")
    with pytest.raises(RuntimeError, match="boom"):
        run(["a.png"], restorer=Fake(bug), raise_unexpected=True)


def test_sequential_mode_gives_the_same_results(cwd: Path) -> None:
    for name in ["a.png", "b.jpg", "c.tif"]:
        save(cwd / "in" / name)
    threaded = run(["in"], "t")
    sequential = run(["in"], "s", prefetch=0, pending=0)
    assert [(r.input, r.status) for r in threaded] == [(r.input, r.status) for r in sequential]
    for name in ["a_derained.png", "b_derained.jpg", "c_derained.tif"]:
        assert (cwd / "t" / name).read_bytes() == (cwd / "s" / name).read_bytes()


def test_stdout_target_gets_the_image_bytes(cwd: Path) -> None:
    save(cwd / "a.tif", fmt="TIFF")
    exp = expand_inputs(["a.tif"])
    out = io.BytesIO()
    plan = plan_outputs(exp, "-", suffix=SUFFIX, fmt=OutputFormat.WEBP)
    (result,) = run_batch(exp.jobs, Fake(), plan, stdout=out)
    assert (result.status, result.output) == (Status.OK, "-")
    assert Image.open(io.BytesIO(out.getvalue())).format == "WEBP"
    assert list(cwd.iterdir()) == [cwd / "a.tif"]


def test_memory_stays_bounded_by_the_queues(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decodes never run more than `prefetch` ahead, writes never lag more than `pending`.

    No sleeps: each restore is held until the decoder has read as far ahead as the bound
    allows, and each write (a slow disk) until the runner has restored as far ahead as it
    allows, so both bounds are reached exactly, and a runner that went further would show."""
    total = 12
    for i in range(total):
        save(cwd / "in" / f"{i:02}.png", size=(8, 8))
    counts = {"decoded": 0, "restored": 0, "written": 0}
    worst = {"ahead": 0, "behind": 0}
    bound = {"prefetch": 0, "pending": 0}
    moved = threading.Condition()
    real_read, real_write = mio.read_image, mio.write_file

    def wait_until(ready: Callable[[], bool]) -> None:
        with moved:
            assert moved.wait_for(ready, timeout=30), "the runner stopped short of its bound"

    def read(*a: Any, **k: Any) -> Any:
        with moved:
            counts["decoded"] += 1
            worst["ahead"] = max(worst["ahead"], counts["decoded"] - counts["restored"])
            moved.notify_all()
        return real_read(*a, **k)

    def write(*a: Any, **k: Any) -> None:
        w = counts["written"]  # one writer thread: this is the w-th write
        wait_until(lambda: counts["restored"] >= min(w + bound["pending"] + 1, total))
        real_write(*a, **k)
        with moved:
            counts["written"] += 1
            moved.notify_all()

    def restored(n: int) -> None:
        wait_until(lambda: counts["decoded"] >= min(n + bound["prefetch"], total))
        with moved:
            counts["restored"] += 1
            worst["behind"] = max(worst["behind"], counts["restored"] - counts["written"])
            moved.notify_all()

    monkeypatch.setattr("mprnet_cli.runners.stages.read_image", read)
    monkeypatch.setattr("mprnet_cli.runners.stages.write_file", write)
    for prefetch, pending in [(1, 1), (2, 2)]:
        counts.update(decoded=0, restored=0, written=0)
        worst.update(ahead=0, behind=0)
        bound.update(prefetch=prefetch, pending=pending)
        results = run(
            ["in"], f"out{prefetch}", restorer=Fake(restored), prefetch=prefetch, pending=pending
        )
        assert all(r.status is Status.OK for r in results) and len(results) == total
        assert worst["ahead"] == prefetch + 1  # the one being restored + the queue
        assert worst["behind"] == pending + 1  # the one just restored + the queue


def test_ctrl_c_lets_the_write_in_progress_finish_and_leaves_no_temp_files(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6):
        save(cwd / "in" / f"{i}.png", size=(8, 8))
    real_write = mio.write_file
    writes: list[int] = []
    second_write_started, interrupted = threading.Event(), threading.Event()

    def slow_write(*a: Any, **k: Any) -> None:
        writes.append(1)
        if len(writes) == 2:  # still being written when Ctrl-C comes
            second_write_started.set()
            assert interrupted.wait(30)
        real_write(*a, **k)

    def interrupt_third(n: int) -> None:
        if n == 3:
            assert second_write_started.wait(30)  # the second image is being written right now
            interrupted.set()
            raise KeyboardInterrupt

    monkeypatch.setattr("mprnet_cli.runners.stages.write_file", slow_write)
    got: list[Result] = []
    with pytest.raises(KeyboardInterrupt):
        for result in run_batch(
            expand_inputs(["in"], suffix=SUFFIX).jobs,
            Fake(interrupt_third),
            plan_outputs(expand_inputs(["in"]), "out", suffix=SUFFIX),
        ):
            got.append(result)
    written = sorted(p.name for p in (cwd / "out").iterdir())
    assert written == ["0_derained.png", "1_derained.png"]  # the in-flight write completed
    for name in written:
        Image.open(cwd / "out" / name).load()
    assert temps(cwd) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("mprnet-")]


def test_temp_files_of_a_killed_run_are_removed_when_their_output_is_reached(cwd: Path) -> None:
    save(cwd / "a.png")
    save(cwd / "b.png")
    save(cwd / "b_derained.png")
    stale = [cwd / ".a_derained.png.0123abcd.tmp", cwd / ".b_derained.png.deadbeef.tmp"]
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    for p in stale:
        p.write_bytes(b"partial")
        os.utime(p, (long_ago, long_ago))
    unrelated = cwd / ".unrelated.png.0123abcd.tmp"
    unrelated.write_bytes(b"someone else's")
    os.utime(unrelated, (long_ago, long_ago))
    results = run(["a.png", "b.png"])
    assert [r.status for r in results] == [Status.OK, Status.SKIPPED]
    assert temps(cwd) == [unrelated]


def test_a_fresh_temp_file_may_be_a_live_write_and_is_kept(cwd: Path) -> None:
    """Another process writing the same output right now keeps its temp file (and succeeds)."""
    save(cwd / "a.png")
    save(cwd / "b.png")
    save(cwd / "b_derained.png")
    live = [cwd / ".a_derained.png.0badcafe.tmp", cwd / ".b_derained.png.00c0ffee.tmp"]
    for p in live:
        p.write_bytes(b"being written")
    a_little_while_ago = time.time() - 5
    os.utime(live[1], (a_little_while_ago, a_little_while_ago))
    results = run(["a.png", "b.png"])
    assert [r.status for r in results] == [Status.OK, Status.SKIPPED]
    assert sorted(temps(cwd)) == sorted(live)
    assert all(p.read_bytes() == b"being written" for p in live)


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """One torch thread: steady timings on busy machines; the setting is process-wide."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_real_tiny_network_through_restorer(cwd: Path, tiny_checkpoint: Path) -> None:
    from mprnet_cli.api import Restorer

    save(cwd / "a.png", size=(24, 24))
    save(cwd / "b.png", size=(24, 24), mode="L")
    (cwd / "c.png").write_bytes(b"")
    loads: list[int] = []

    def load() -> Restorer:
        loads.append(1)
        return Restorer("derain", weights=tiny_checkpoint, device="cpu", tile=0)

    results = run(["a.png", "b.png", "c.png"], restorer=load)
    assert [r.status for r in results] == [Status.OK, Status.OK, Status.FAILED]
    assert loads == [1]
    assert results[0].device == "cpu" and results[0].tiles == 1
    assert "empty" in (results[2].error or "")
    gray = Image.open(cwd / "b_derained.png")
    assert gray.mode == "L" and gray.size == (24, 24)
    assert not np.array_equal(np.asarray(gray), np.asarray(Image.open(cwd / "b.png")))
    assert temps(cwd) == []


# --------------------------------------------------------------------------- audit cases


def test_outputs_settled_when_interrupted_are_still_reported(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while image 2 is restored and image 1 is being written: the write finishes
    and image 1's result reaches `finished` (its output exists, so it must be reported)."""
    for name in ("a.png", "b.png", "c.png"):
        save(cwd / "in" / name)
    writing, release = threading.Event(), threading.Event()
    real_write = mio.write_file

    def held_write(*args: Any, **kwargs: Any) -> None:
        writing.set()
        assert release.wait(10)
        real_write(*args, **kwargs)

    def on_call(n: int) -> None:
        if n == 2:
            assert writing.wait(10)  # image 1's write is in progress
            release.set()
            raise KeyboardInterrupt

    monkeypatch.setattr("mprnet_cli.runners.stages.write_file", held_write)
    reported: list[Result] = []
    exp = expand_inputs(["in"], suffix=SUFFIX)
    plan = plan_outputs(exp, "out", suffix=SUFFIX)
    results = run_batch(
        exp.jobs, Fake(on_call), plan, callbacks=Callbacks(finished=reported.append)
    )
    with pytest.raises(KeyboardInterrupt):
        list(results)
    assert [(r.input, r.status) for r in reported] == [("in/a.png", Status.OK)]
    assert sorted(p.name for p in (cwd / "out").iterdir()) == ["a_derained.png"]
    assert temps(cwd) == []


def test_an_input_behind_a_folder_we_cannot_enter_fails_alone(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path.is_dir raised PermissionError and aborted the batch as "a bug" (root ignores
    permissions, so the refusal is mocked)."""
    save(cwd / "ok.png")
    save(cwd / "locked" / "x.png")
    real_stat = Path.stat

    def stat(self: Path, **kwargs: Any) -> os.stat_result:
        if "locked" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    results = run(["locked/x.png", "ok.png"], "out")
    assert [(r.input, r.status) for r in results] == [
        ("locked/x.png", Status.FAILED),
        ("ok.png", Status.OK),
    ]
    assert "permission denied" in (results[0].error or "")


def test_skipped_entries_are_reported_never_silent(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable subfolder under -r and a broken link named like an image each give a
    warning; a folder that cannot be listed at all fails as such, not as "no images"."""
    save(cwd / "top" / "a.png")
    save(cwd / "top" / "secret" / "b.png")
    (cwd / "top" / "gone.png").symlink_to(cwd / "nowhere.png")
    save(cwd / "closed" / "c.png")
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path).name in ("secret", "closed"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    exp = expand_inputs(["top", "closed"], recursive=True, suffix=SUFFIX)
    assert [(j.label, j.error is None) for j in exp.jobs] == [
        ("top/a.png", True),
        ("closed", False),
    ]
    assert "cannot list this folder: permission denied" in (exp.jobs[1].error or "")
    assert exp.warnings == (
        "top/gone.png: skipped: a broken symbolic link",
        "top/secret: folder skipped: permission denied; check the permissions of it and of "
        "the folders above it",
    )


@pytest.mark.parametrize("output", ["blocker/out/", "blocker/x.png"])
def test_unwritable_output_fails_before_any_restore(cwd: Path, output: str) -> None:
    """-o below a file (like -o /proc/x/): each input fails at once, nothing is restored."""
    (cwd / "blocker").write_text("a file, not a folder")
    save(cwd / "a.png")
    args = ["a.png"] if output.endswith(".png") else ["a.png", "b.png"]
    if len(args) == 2:
        save(cwd / "b.png")
    fake = Fake()
    results = run(args, output, restorer=fake)
    assert fake.calls == 0
    assert {r.status for r in results} == {Status.FAILED}
    assert all("blocker" in (r.error or "") for r in results)


def test_a_folder_that_refuses_files_fails_its_jobs_before_restoring(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real probe, not os.access (root passes permission checks /proc still refuses)."""
    save(cwd / "a.png")
    save(cwd / "b.png")

    def refuse(folder: Path, name: str) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("mprnet_cli.imageio.atomic.create_temp", refuse)
    fake = Fake()
    results = run(["a.png", "b.png"], "out", restorer=fake)
    assert fake.calls == 0
    assert [r.error for r in results] == [
        "out: the file system is read-only; write elsewhere"  # its advice once, not doubled
    ] * 2


def test_disk_full_on_stdout_is_one_clear_failure(cwd: Path) -> None:
    save(cwd / "a.png")

    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    (result,) = run(["a.png"], "-", stdout=Full())  # type: ignore[arg-type]
    assert result.status is Status.FAILED
    assert result.error == "stdout: not enough disk space; free some space or write elsewhere"


def test_special_files_are_never_replaced(cwd: Path) -> None:
    """-o /dev/full -f as root would have replaced the device with a regular file."""
    save(cwd / "a.png")
    os.mkfifo(cwd / "pipe.png")
    (result,) = run(["a.png"], "pipe.png", overwrite=True)
    assert result.status is Status.FAILED and "not a regular file" in (result.error or "")
    assert (cwd / "pipe.png").is_fifo()


# --------------------------------------------------------------------------- truthful progress


def test_each_result_is_reported_when_its_output_is_written(cwd: Path) -> None:
    """Image 1's record reaches `finished` while image 2 is still being restored (it used to
    wait for the next image to finish), and no record comes before its file exists."""
    for name in ("a.png", "b.png", "c.png"):
        save(cwd / "in" / name)
    reported: list[tuple[str, bool]] = []
    first = threading.Event()

    def finished(result: Result) -> None:
        reported.append((result.input, Path(result.output or "").is_file()))
        first.set()

    def on_call(n: int) -> None:
        if n == 2:  # image 2's restore waits for image 1's record: it cannot come after
            assert first.wait(10), "image 1 was reported only after image 2 was restored"

    results = run(["in"], "out", restorer=Fake(on_call), callbacks=Callbacks(finished=finished))
    assert [r.status for r in results] == [Status.OK] * 3
    assert reported == [(f"in/{n}.png", True) for n in "abc"]  # in order, each file on disk


def test_failures_are_reported_in_input_order_between_the_writes(cwd: Path) -> None:
    save(cwd / "a.png")
    (cwd / "b.png").write_bytes(b"not an image")
    save(cwd / "c.png")
    reported: list[str] = []
    results = run(
        ["a.png", "b.png", "c.png"],
        callbacks=Callbacks(finished=lambda r: reported.append(r.input)),
    )
    assert [r.status for r in results] == [Status.OK, Status.FAILED, Status.OK]
    assert reported == ["a.png", "b.png", "c.png"] == [r.input for r in results]


# --------------------------------------------------------------------------- issue 23


def test_an_output_name_too_long_fails_that_input_alone(cwd: Path) -> None:
    """A 250-byte stem: its output name is over 255 bytes (exists() raised ENAMETOOLONG in
    the decode thread and aborted the batch). A 236-byte stem: a legal output name whose
    temporary file's name is not; it fails up front, before any restore."""
    longest, tight = "l" * 250 + ".png", "t" * 236 + ".png"
    for name in ("a.png", longest, tight, "z.png"):
        save(cwd / name)
    fake = Fake()
    results = run(["a.png", longest, tight, "z.png"], restorer=fake)
    assert [r.status for r in results] == [Status.OK, Status.FAILED, Status.FAILED, Status.OK]
    assert fake.calls == 2
    for r in results[1:3]:
        assert "bytes long" in (r.error or "") and "--suffix" in (r.error or ""), r.error
    assert sorted(p.name for p in cwd.iterdir()) == sorted(
        ["a.png", longest, tight, "z.png", f"a{SUFFIX}.png", f"z{SUFFIX}.png"]
    )


def test_the_first_image_is_restored_while_the_listing_goes_on(cwd: Path) -> None:
    """The runner iterates the `Listing` as it goes: the first result is reported before
    the walk has listed the last folder (a list of jobs would have been listed whole)."""
    for d in range(3):
        save(cwd / "in" / f"d{d}" / "a.png")
    listing = Listing(["in"], recursive=True, suffix=SUFFIX)
    seen: list[tuple[str, bool]] = []
    callbacks = Callbacks()
    plan = plan_outputs(listing, "out", suffix=SUFFIX)
    first_written = threading.Event()

    def finished(result: Result) -> None:
        seen.append((result.input, listing.done))
        first_written.set()

    callbacks.finished = finished

    def hold_second(calls: int) -> None:  # restoring image 2 waits for image 1's record
        if calls == 2:
            assert first_written.wait(30)

    results = list(run_batch(listing, Fake(hold_second), plan, callbacks=callbacks))
    assert [r.status for r in results] == [Status.OK] * 3
    assert seen[0] == (str(Path("in/d0/a.png")), False)
    assert listing.done and listing.count == 3
