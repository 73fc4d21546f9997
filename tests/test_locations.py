"""Tests for mprnet_cli.imageio.locations: URIs as planner locations (no store is contacted here;
tests/test_runners_ray.py runs them against a local S3 stand-in)."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import pytest

from mprnet_cli.errors import UsageError
from mprnet_cli.imageio import OutputFormat
from mprnet_cli.imageio.locations import (
    StorePath,
    _filesystem,
    _matches,
    engine_paths,
    location,
    pattern_root,
)
from mprnet_cli.jobs import Destination, Job, OutputPlan, output_name


def test_engine_paths_map_file_uris_and_keep_paths() -> None:
    paths = ["photos/a b.png", "file:///data/a%20b/x.png"]
    assert engine_paths(paths, "file:///data/out/", ray=False) == (
        ["photos/a b.png", "/data/a b/x.png"],
        "/data/out/",
    )
    assert engine_paths(["s3://b/x.png"], "gs://b/out", ray=True) == (
        ["s3://b/x.png"],
        "gs://b/out",
    )


@pytest.mark.parametrize(
    ("args", "output"), [(["s3://b/x.png"], None), (["x.png"], "abfs://c@a/o")]
)
def test_object_store_uris_need_the_ray_engine(args: list[str], output: str | None) -> None:
    with pytest.raises(UsageError, match="--engine ray"):
        engine_paths(args, output, ray=False)


def test_store_paths_behave_like_posix_paths() -> None:
    p = StorePath.parse("s3://bkt/in//sub/IMG_1.JPG")
    assert str(p) == "s3://bkt/in/sub/IMG_1.JPG" and location(str(p)) == p
    assert (p.name, p.stem, p.suffix) == ("IMG_1.JPG", "IMG_1", ".JPG")
    assert str(p.parent.parent) == "s3://bkt/in" and str(p.bucket.parent) == "s3://bkt"
    assert p.relative_to(StorePath.parse("s3://bkt/in/")) == PurePosixPath("sub/IMG_1.JPG")
    assert p.relative_to(p.bucket) == PurePosixPath("in/sub/IMG_1.JPG")
    with pytest.raises(ValueError):
        p.relative_to(StorePath.parse("s3://other/in"))
    out = StorePath.parse("s3://bkt/out") / PurePosixPath("sub") / "x.png"
    assert str(out) == "s3://bkt/out/sub/x.png"
    assert isinstance(location("file:///x"), Path) and isinstance(location("a/b"), Path)
    with pytest.raises(UsageError, match="bucket"):
        StorePath.parse("s3:///key")


def test_the_planner_names_and_mirrors_objects_as_it_does_files() -> None:
    src = StorePath.parse("s3://bkt/in/sub/IMG_1.JPG")
    job = Job(src, root=StorePath.parse("s3://bkt/in"))
    mirrored = OutputPlan(Destination.DIRECTORY, StorePath.parse("gs://o/x"), suffix="_d")
    assert str(mirrored.target(job, OutputFormat.JPEG)) == "gs://o/x/sub/IMG_1_d.JPG"
    beside = OutputPlan(Destination.NEXT_TO_INPUT, suffix="_d")
    assert str(beside.target(job, OutputFormat.PNG)) == "s3://bkt/in/sub/IMG_1_d.png"
    local = OutputPlan(Destination.DIRECTORY, Path("out"), suffix="_d")
    assert local.target(job, OutputFormat.PNG) == Path("out/sub/IMG_1_d.png")
    assert output_name(job, "_d", OutputFormat.PNG) == "IMG_1_d.png"


@pytest.mark.parametrize(
    ("pattern", "path", "want"),
    [
        ("*.png", "a.png", True),
        ("*.png", "sub/a.png", False),  # * stays within a segment
        ("**/*.png", "a.png", True),  # ** spans zero segments
        ("**/*.png", "x/y/a.png", True),
        ("**/*.png", ".hidden/a.png", False),  # ** does not enter hidden folders
        ("*.png", ".a.png", False),
        ("s?b/[ab].png", "sub/b.png", True),
        ("s?b/[ab].png", "sub/c.png", False),
    ],
)
def test_store_globs_follow_glob_rules(pattern: str, path: str, want: bool) -> None:
    assert _matches(path.split("/"), pattern.split("/")) is want


def test_pattern_root_is_the_fixed_leading_folders() -> None:
    assert pattern_root("s3://bkt/in/sub/*.png") == "s3://bkt/in/sub"
    assert pattern_root("s3://bkt/**/x*.png") == "s3://bkt/"
    assert pattern_root("gs://bkt/a/b?/c.png") == "gs://bkt/a"


def test_a_missing_pyarrow_is_a_usage_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _filesystem.cache_clear()
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # `import pyarrow.fs` fails
    try:
        with pytest.raises(UsageError, match=r"mprnet-cli\[ray\]"):
            StorePath.parse("s3://b/x.png").kind()
    finally:
        _filesystem.cache_clear()
