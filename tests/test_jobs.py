"""Tests for mprnet_cli.jobs.Planner: the per-job rules both runners apply.

Inputs and output names are tested through `mprnet_cli.runners.local` (tests/test_runners_local.py), which
re-exports them; these tests call the planner the way the Ray runner does: up front, from
names alone.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mprnet_cli.imageio import OutputFormat
from mprnet_cli.jobs import (
    STALE_TEMP_SECONDS,
    Destination,
    Job,
    Listing,
    Planner,
    Result,
    Screened,
    Status,
    expand_inputs,
    failed_at_write,
    plan_outputs,
    restored,
    skipped_at_write,
)

SUFFIX = "_x"


def save(path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, fmt)
    return path


def planner(args: list[str], output: str | None, *, overwrite: bool = False) -> Planner:
    exp = expand_inputs(args, suffix=SUFFIX, exclude=Path(output) if output else None)
    return Planner(plan_outputs(exp, output, suffix=SUFFIX), exp.jobs, overwrite=overwrite)


@pytest.fixture()
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_screen_claims_the_predicted_output_and_creates_its_folder(cwd: Path) -> None:
    save(cwd / "in" / "sub" / "a.jpg", "JPEG")
    p = planner(["in/sub/a.jpg"], "out/")
    verdict = p.screen(p.jobs[0])
    assert verdict == Screened(p.jobs[0], Path("out/a_x.jpg"))
    assert (cwd / "out").is_dir()  # created and test-written before any work is sent out


def test_screen_skips_existing_outputs_unless_overwrite(cwd: Path) -> None:
    save(cwd / "a.png")
    save(cwd / "a_x.png")
    skip = planner(["a.png"], None).screen(Job(Path("a.png"), root=Path()))
    assert isinstance(skip, Result) and skip.status is Status.SKIPPED
    again = planner(["a.png"], None, overwrite=True)
    assert isinstance(again.screen(again.jobs[0]), Screened)


def test_screen_fails_collisions_errors_and_unwritable_folders(cwd: Path) -> None:
    save(cwd / "x" / "a.png")
    save(cwd / "y" / "a.png")
    p = planner(["x/a.png", "y/a.png"], "out")
    assert isinstance(p.screen(p.jobs[0]), Screened)
    second = p.screen(p.jobs[1])
    assert isinstance(second, Result) and second.status is Status.FAILED
    assert "also the output of x/a.png" in (second.error or "")

    broken = p.screen(Job(Path("gone.png"), error="no such file; check the path"))
    assert isinstance(broken, Result) and broken.error == "no such file; check the path"

    (cwd / "blocker").write_text("a file where the output folder should be")
    q = planner(["x/a.png"], "blocker/sub/")
    verdict = q.screen(q.jobs[0])
    assert isinstance(verdict, Result) and verdict.status is Status.FAILED
    assert verdict.output == "blocker/sub/a_x.png" and "choose another -o" in (verdict.error or "")


def test_screen_lets_unpredictable_inputs_through_without_a_target(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(cwd / "a.png")
    p = planner(["a.png"], None)
    # What an unreadable file gives (a mock: root reads any file whatever its mode).
    monkeypatch.setattr("mprnet_cli.jobs.outputs.predict_format", lambda path, fmt: None)
    assert p.screen(p.jobs[0]) == Screened(p.jobs[0], None)


def test_check_removes_only_stale_temp_files_and_release_forgets_the_claim(cwd: Path) -> None:
    save(cwd / "a.png")
    stale, fresh = cwd / ".a_x.png.0123abcd.tmp", cwd / ".a_x.png.89abcdef.tmp"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"partial")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    p = planner(["a.png"], None)
    target = Path("a_x.png")
    assert p.check(p.jobs[0], target) is None
    assert not stale.exists() and fresh.exists()
    assert p.check(p.jobs[0], target) is not None  # claimed: a second claim fails
    p.release(target)
    assert p.check(p.jobs[0], target) is None


def test_exists_ahead_only_for_existing_outputs_without_overwrite(cwd: Path) -> None:
    save(cwd / "a.png")
    p = planner(["a.png"], None)
    assert not p.exists_ahead(p.jobs[0])
    save(cwd / "a_x.png")
    assert p.exists_ahead(p.jobs[0])
    assert not planner(["a.png"], None, overwrite=True).exists_ahead(p.jobs[0])


def test_records_at_write_keep_what_was_known() -> None:
    done = restored(
        Job(Path("a.png")),
        Path("a_x.png"),
        ["a.png: note", "other note", "other note"],
        seconds=1.5,
        device="cpu",
        tiles=2,
        width=4,
        height=3,
    )
    assert done.warnings == ("a.png: note", "a.png: other note")
    skipped = skipped_at_write(done)
    assert (skipped.status, skipped.seconds, skipped.device, skipped.tiles) == (
        Status.SKIPPED,
        None,
        None,
        None,
    )
    assert skipped.width == 4 and skipped.warnings == done.warnings
    lost = failed_at_write(done, "disk full")
    assert (lost.status, lost.error, lost.seconds, lost.device) == (
        Status.FAILED,
        "disk full",
        None,
        "cpu",
    )


def test_screening_by_name_reads_no_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sniff=False` (the Ray driver) plans `--format same` from extensions alone; the output
    a decode settles is screened by the same rules (`screen_settled`)."""
    (tmp_path / "a.jpg").write_bytes(b"\x89PNG\r\n\x1a\n a PNG called .jpg")
    (tmp_path / "b.tif").write_bytes(b"II*\x00")
    (tmp_path / "b_x.tif").write_bytes(b"exists")
    exp = expand_inputs([str(tmp_path)], suffix="_x")
    plan = plan_outputs(exp, None, suffix="_x")
    planner = Planner(plan, exp.jobs)

    def no_reading(*a: Any, **k: Any) -> Any:
        raise AssertionError("an input was read to plan its output")

    monkeypatch.setattr("mprnet_cli.jobs.outputs.predict_format", no_reading)
    a, b = (planner.screen(job, sniff=False) for job in exp.jobs)
    assert isinstance(a, Screened) and a.target == tmp_path / "a_x.jpg"
    assert isinstance(b, Result) and b.status is Status.SKIPPED
    planner.release(tmp_path / "a_x.jpg")
    settled = planner.screen_settled(a.job, tmp_path / "a_x.png")
    assert isinstance(settled, Screened) and settled.target == tmp_path / "a_x.png"


# --------------------------------------------------------------------------- issue 23


def test_subfolders_left_out_without_r_are_counted(cwd: Path) -> None:
    save(cwd / "trip" / "a.png")
    save(cwd / "trip" / "day2" / "b.png")
    save(cwd / "trip" / "day3" / "c.png")
    (cwd / "trip" / ".cache").mkdir()  # hidden: -r would not search it either
    exp = expand_inputs(["trip"], suffix=SUFFIX)
    assert [j.label for j in exp.jobs] == ["trip/a.png"]
    assert exp.notes == ("trip: 2 subfolders not searched; -r/--recursive includes them",)
    deep = expand_inputs(["trip"], recursive=True, suffix=SUFFIX)
    assert len(deep.jobs) == 3 and deep.notes == ()


def test_a_glob_into_an_unreadable_folder_warns(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As -r does for a subfolder (root reads every folder, so the refusal is mocked)."""
    save(cwd / "locked" / "a.png")
    save(cwd / "open" / "b.png")
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    why = (
        "folder skipped: permission denied; check the permissions of it and of the folders above it"
    )
    exp = expand_inputs(["locked/*.png"], suffix=SUFFIX)
    assert [j.error for j in exp.jobs] == ["no image files match this pattern"]
    assert exp.warnings == (f"locked: {why}",)
    both = expand_inputs(["*/*.png"], suffix=SUFFIX)
    assert [j.label for j in both.jobs] == ["open/b.png"]
    assert both.warnings == (f"locked: {why}",)


def test_a_tree_deeper_than_the_recursion_limit_is_searched(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    depth = 1200
    top = cwd / "top"
    top.mkdir()
    save(top / "a.png")
    os.chdir(top)
    try:
        for _ in range(depth):  # one level at a time: mkdir(parents=True) itself recurses
            Path("d").mkdir()
            os.chdir("d")
        save(Path("x.png"))
        os.chdir(cwd)
        exp = expand_inputs(["top"], recursive=True, suffix=SUFFIX)
        assert [j.source for j in exp.jobs] == [
            Path("top/a.png"),
            Path("top", *["d"] * depth, "x.png"),
        ]
    finally:  # bottom-up, one level at a time: shutil.rmtree (pytest's clean-up) recurses too
        os.chdir(top)
        for _ in range(depth):
            os.chdir("d")
        for entry in Path().iterdir():
            entry.unlink()
        for _ in range(depth):
            os.chdir("..")
            Path("d").rmdir()
        os.chdir(cwd)


def test_explicit_inputs_named_like_our_outputs_are_left_out(cwd: Path) -> None:
    """`mprnet denoise p*.png` rerun after a stop: the shell passes p1_x.png too."""
    for name in ("p1.png", "p1_x.png", "p2.png"):
        save(cwd / name)
    args = ["p1.png", "p1_x.png", "p2.png"]
    exp = expand_inputs(args, suffix=SUFFIX)
    assert [j.label for j in exp.jobs] == ["p1.png", "p2.png"]
    assert exp.notes == (
        "1 input left out, named like this command's outputs (*_x): p1_x.png; --overwrite "
        "restores it too",
    )
    forced = expand_inputs(args, suffix=SUFFIX, overwrite=True)
    assert [j.label for j in forced.jobs] == args and forced.notes == ()
    alone = expand_inputs(["p1_x.png"], suffix=SUFFIX)  # named on its own: meant
    assert [j.label for j in alone.jobs] == ["p1_x.png"]


# --------------------------------------------------------------------------- issue 18: streaming


def test_the_first_job_comes_before_the_walk_goes_on(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `Listing` yields a folder's jobs as soon as that folder is listed: after the first
    job only the argument and its first subfolder were read (a list of every job, as
    `expand_inputs` builds, reads all 21 folders first)."""
    for d in range(20):
        for i in range(3):
            (cwd / "in" / f"d{d:02}").mkdir(parents=True, exist_ok=True)
            (cwd / "in" / f"d{d:02}" / f"{i}.png").touch()
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        listed.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = Listing(["in"], recursive=True, suffix=SUFFIX)
    first = next(listing)
    assert first.label == str(Path("in", "d00", "0.png"))
    assert listed == ["in", str(Path("in", "d00"))] and not listing.done
    rest = list(listing)
    assert len(rest) == 59 and listing.done and listing.count == 60
    assert [j.label for j in [first, *rest]] == [
        j.label for j in expand_inputs(["in"], recursive=True, suffix=SUFFIX).jobs
    ]


def test_streaming_keeps_no_record_per_input(cwd: Path) -> None:
    """20,000 inputs in 20 folders, listed and screened (-o DIR) as the Ray driver does.

    What may stay per folder: its sorted names (~70 B each) and the claims of its outputs
    (key, label and a dict slot: ~300 B each), so ~0.4 MB for a folder of 1,000, plus caches
    per folder. A plan held whole costs ~500 B or more per input (a `Job` with its `Path`s,
    and a claim per output): ~10 MB here. The bound, 100 B per input (2 MB), sits between
    the two with a margin of ~5 either way; it bounds the peak and what is left at the end."""
    count, folders = 20_000, 20
    for d in range(folders):
        (cwd / "in" / f"d{d:02}").mkdir(parents=True)
    for i in range(count):
        (cwd / "in" / f"d{i % folders:02}" / f"{i:07}.png").touch()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        listing = Listing(["in"], recursive=True, suffix=SUFFIX, exclude=Path("out"))
        p = Planner(plan_outputs(listing, "out", suffix=SUFFIX), listing)
        screened = sum(isinstance(p.screen(job, sniff=False), Screened) for job in listing)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert screened == count
    assert peak - before < 100 * count, f"peak grew {(peak - before) / count:.0f} B per input"
    assert after - before < 100 * count, f"kept {(after - before) / count:.0f} B per input"


def test_duplicates_across_arguments_and_links_without_a_set_of_inputs(cwd: Path) -> None:
    save(cwd / "in" / "a.png")
    save(cwd / "in" / "sub" / "b.png")
    (cwd / "in" / "sub" / "c.png").symlink_to(cwd / "in" / "sub" / "b.png")  # after b: dropped
    (cwd / "in" / "sub" / "0.png").symlink_to(cwd / "in" / "a.png")  # a came first: dropped
    (cwd / "in" / "sub" / "d.png").symlink_to(cwd / "in" / "sub" / "e.png")  # before e: kept
    save(cwd / "in" / "sub" / "e.png")

    def labels(args: list[str], recursive: bool = True) -> list[str]:
        return [j.label for j in Listing(args, recursive=recursive, suffix=SUFFIX)]

    sub = [str(Path("in", "sub", n)) for n in ("b.png", "d.png")]
    assert labels(["in"]) == [str(Path("in", "a.png")), *sub]
    assert labels(["in", "in/sub", "in/a.png"]) == [str(Path("in", "a.png")), *sub]
    assert labels(["in/sub", "in"]) == [
        *(str(Path("in/sub", n)) for n in ("0.png", "b.png", "d.png")),
    ]
    # without -r the first walk does not reach in/sub: the second one lists it
    assert labels(["in", "in/sub"], recursive=False) == [
        str(Path("in", "a.png")),
        *(str(Path("in/sub", n)) for n in ("b.png", "d.png")),
    ]


def test_another_input_is_told_from_the_walks_to_come(cwd: Path) -> None:
    """With a streamed listing, an output written into a folder a later walk lists would be
    restored as an input of the same run: it fails as another input, as an existing
    output there does; once that folder is walked, a new file there is no input."""
    save(cwd / "one" / "a.png")
    save(cwd / "two" / "b.png")
    listing = Listing(["one", "two"], suffix="")
    assert listing.is_input(cwd / "two" / "new.png")  # two is still to be walked
    assert listing.is_input(Path("two/b.png"))
    assert not listing.is_input(cwd / "two" / ".hidden.png")
    assert not listing.is_input(cwd / "elsewhere" / "b.png")
    assert [j.label for j in listing] == [
        str(Path("one", "a.png")),
        str(Path("two", "b.png")),
    ]
    assert not listing.is_input(cwd / "two" / "new.png")  # walked already
    assert listing.is_input(cwd / "two" / "b.png")  # exists: listed
    plan = plan_outputs(Listing(["one", "two"], suffix=""), "two", suffix="", fmt=OutputFormat.PNG)
    assert plan.destination is Destination.DIRECTORY
    listing = Listing(["one", "two"], suffix="", overwrite=True)
    p = Planner(plan, listing, overwrite=True)
    first = p.screen(next(listing))
    assert isinstance(first, Result) and "another input" in (first.error or "")


def test_claims_last_for_one_folder_of_one_tree_and_still_catch_collisions(cwd: Path) -> None:
    save(cwd / "in" / "a" / "x.jpg", "JPEG")
    save(cwd / "in" / "a" / "x.png")
    save(cwd / "in" / "b" / "x.png")
    listing = Listing(["in"], recursive=True, suffix=SUFFIX)
    p = Planner(plan_outputs(listing, "out", suffix=SUFFIX, fmt=OutputFormat.PNG), listing)
    verdicts = [p.screen(job, sniff=False) for job in listing]
    assert [type(v).__name__ for v in verdicts] == ["Screened", "Result", "Screened"]
    assert "also the output of" in (verdicts[1].error or "")  # type: ignore[union-attr]
    assert len(p._claims) == 1  # the folder in/b's alone


def test_a_job_back_in_a_folder_left_before_meets_that_folders_claims(cwd: Path) -> None:
    """The Ray driver replans a file whose content settled another name after the rest
    (`--format same`): a PNG called x.jpg settles on x_x.png, which x.png claimed when its
    folder was planned; the claims of a folder left before are made again from its names."""
    save(cwd / "in" / "a" / "x.jpg", "PNG")
    save(cwd / "in" / "a" / "x.png")
    save(cwd / "in" / "b" / "y.png")
    listing = Listing(["in"], recursive=True, suffix=SUFFIX)
    p = Planner(plan_outputs(listing, "out", suffix=SUFFIX), listing)
    first, second, third = (p.screen(job, sniff=False) for job in listing)
    assert isinstance(first, Screened) and first.target == Path("out/a/x_x.jpg")
    assert isinstance(second, Screened) and isinstance(third, Screened)
    p.release(first.target)
    again = p.screen_settled(first.job, Path("out/a/x_x.png"))
    assert isinstance(again, Result) and "also the output of in/a/x.png" in (again.error or "")
