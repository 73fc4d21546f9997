"""Tests for video under `--engine ray` (`mprnet_cli.runners.ray.video`) and the segment
functions it uses (`mprnet_cli.video.clip`: plan_segments, restore_segment, join_segments).

The claim checked (docs/video.md, Engines): the Ray engine's output has the local engine's
frame count, timestamps and audio packets, starts a keyframe at every segment, and with
`--video-quality 0` (lossless H.264) its decoded frames equal the local engine's exactly
(bound 0: both encode the same restored pixels losslessly). The bytes differ (each segment
starts its own GOP), so no byte comparison is claimed; at lossy quality each segment's
encoder quantises on its own, so frames differ within the encoder's error (bound below).
"""

from __future__ import annotations

import collections
import functools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

av = pytest.importorskip("av")
ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'mprnet-cli[ray]'")

from mprnet_cli.video import VideoOptions, clip  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.helpers import FAST, invoke, temps  # noqa: E402
from tests.test_video import (  # noqa: E402
    STEP,
    audio_packets,
    make_clip,
    planes,
    video_frames,
)

GOP = 12  # the test clips' keyframe interval, in frames


def keyframe_times(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [p.pts for p in c.demux(s) if p.size and p.is_keyframe]


def darken(width: int, height: int) -> Callable[[Any], Any]:
    """A stand-in network for the segment functions: deterministic and visible."""
    return lambda rgb: rgb * np.float32(0.8) + np.float32(0.1)


# --------------------------------------------------------------------------- segments


def test_plan_segments_cuts_at_keyframes_and_merges_short_intervals(tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    stamps = make_clip(src, frames=48, audio=None, gop=GOP)
    keys = [stamps[i] for i in range(0, 48, GOP)]
    assert keyframe_times(src) == keys
    bounds, frames = clip.plan_segments(src, GOP)
    assert frames == 48
    assert bounds == [(None, keys[1]), (keys[1], keys[2]), (keys[2], keys[3]), (keys[3], None)]
    # at least 20 frames each: a cut at frame 24; the 12-frame tail joins the one before
    assert clip.plan_segments(src, 20)[0] == [(None, keys[2]), (keys[2], None)]
    one = tmp_path / "one.mp4"
    make_clip(one, frames=20, audio=None)  # x264's default GOP: one keyframe
    assert clip.plan_segments(one, GOP) == ([(None, None)], 20)


def test_segments_joined_equal_the_whole_clip_lossless_and_lossy(tmp_path: Path) -> None:
    """Segments restored apart and joined: every frame once, in order, with its timestamp
    (VFR here), each segment opening with a keyframe, the audio copied packet for packet.
    Lossless: the frames equal the whole-clip encode's exactly. CRF 18 (B-frames, so each
    segment's first decoding times precede its first frame's): the join holds, and each
    frame is within the encoder's error of the lossless one (PSNR > 35 dB, as in
    test_video.py; a shifted or missing frame of these moving gradients measures < 25)."""
    src = tmp_path / "in.mp4"
    stamps = make_clip(src, frames=48, gop=GOP, vfr=True)
    bounds, _ = clip.plan_segments(src, GOP)
    decoded = {}
    for quality in (0, 18):
        options = VideoOptions(quality=quality)
        whole, joined = tmp_path / f"whole{quality}.mp4", tmp_path / f"joined{quality}.mp4"
        clip.restore_video(src, whole, darken, options=options, overwrite=False)
        segments = [
            clip.restore_segment(src, a, b, darken, options=options, muxer="mp4") for a, b in bounds
        ]
        assert [s.frames for s in segments] == [GOP] * 4
        assert all(s.packets[0][4] for s in segments)  # each opens with a keyframe
        report = clip.join_segments(src, joined, iter(segments), options=options, overwrite=False)
        assert report.frames == 48
        _, got = video_frames(joined)
        _, want = video_frames(whole)
        assert [f.pts for f in got] == [f.pts for f in want] == stamps
        assert keyframe_times(joined) == [stamps[i] for i in range(0, 48, GOP)]
        assert audio_packets(joined) == audio_packets(src)
        decoded[quality] = got
        if quality == 0:
            for a, b in zip(got, want, strict=True):
                for x, y in zip(planes(a), planes(b), strict=True):
                    np.testing.assert_array_equal(x, y)
    for lossy, exact in zip(decoded[18], decoded[0], strict=True):
        err = np.concatenate(
            [
                (x.astype(float) - y).ravel()
                for x, y in zip(planes(lossy), planes(exact), strict=True)
            ]
        )
        assert 10 * np.log10(255**2 / max(np.mean(err**2), 1e-12)) > 35
    assert temps(tmp_path) == []


def test_a_segment_with_a_bad_header_fails_the_join_and_leaves_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, frames=24, audio=None, gop=GOP)
    bounds, _ = clip.plan_segments(src, GOP)
    segments = [
        clip.restore_segment(src, a, b, darken, options=VideoOptions(), muxer="mp4")
        for a, b in bounds
    ]
    other = clip.restore_segment(
        src, *bounds[1], darken, options=VideoOptions(quality=0), muxer="mp4"
    )
    assert other.extradata != segments[0].extradata  # lossless x264 has another header
    with pytest.raises(clip.VideoError, match="other codec settings"):
        clip.join_segments(
            src, dst, iter([segments[0], other]), options=VideoOptions(), overwrite=False
        )
    assert list(tmp_path.iterdir()) == [src]


def test_ctrl_c_during_the_join_leaves_no_output_and_no_temp_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, frames=24, gop=GOP)
    bounds, _ = clip.plan_segments(src, GOP)
    first = clip.restore_segment(src, *bounds[0], darken, options=VideoOptions(), muxer="mp4")

    def segments() -> Iterator[Any]:
        yield first
        raise KeyboardInterrupt  # the user presses Ctrl-C while the second is awaited

    with pytest.raises(KeyboardInterrupt):
        clip.join_segments(src, dst, segments(), options=VideoOptions(), overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray of 3 logical CPUs on this 2-core machine (two network actors of one CPU
    each, one CPU for I/O: `cluster_plan`), whose workers import this checkout. Another
    module's smaller Ray (test_runners_ray.py's, whose tests run before these) is replaced."""
    if ray.is_initialized():
        if ray.cluster_resources().get("CPU", 0) >= 3:
            yield
            return
        ray.shutdown()
    ray.init(
        num_cpus=3,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_engine_restores_a_clip_by_segments_frame_identical_to_local(
    tmp_path: Path, checkpoint: Path, ray_local: None
) -> None:
    stamps = make_clip(tmp_path / "clip.mp4", frames=48, gop=GOP, rotation=90)
    (tmp_path / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3 not a clip")
    args = ["derain", "clip.mp4", "--json", "-w", checkpoint, *FAST, "--video-quality", "0"]
    local = invoke(*args, "-o", "local/", cwd=tmp_path)
    assert local.exit_code == 0, local.stderr
    distributed = invoke(*args, "broken.mkv", "-o", "ray/", "--engine", "ray", cwd=tmp_path)
    assert distributed.exit_code == 1, distributed.stderr
    records = {r["input"]: r for r in map(json.loads, distributed.stdout.splitlines())}
    assert records["clip.mp4"]["status"] == "ok"
    assert (records["clip.mp4"]["width"], records["clip.mp4"]["height"]) == (96, 64)
    assert records["broken.mkv"]["status"] == "failed"
    assert "cannot read this video" in records["broken.mkv"]["error"]
    assert not (tmp_path / "ray" / "broken_derained.mkv").exists()
    want, got = tmp_path / "local" / "clip_derained.mp4", tmp_path / "ray" / "clip_derained.mp4"
    # four segments, each opening with a keyframe; the local encode has one GOP
    assert keyframe_times(got) == [0, GOP * STEP, 2 * GOP * STEP, 3 * GOP * STEP]
    assert keyframe_times(want) == [0]
    tb_want, frames_want = video_frames(want)
    tb_got, frames_got = video_frames(got)
    assert tb_got == tb_want
    assert [f.pts for f in frames_got] == [f.pts for f in frames_want] == stamps
    assert {f.rotation for f in frames_got} == {90}
    for a, b in zip(frames_got, frames_want, strict=True):
        for x, y in zip(planes(a), planes(b), strict=True):
            np.testing.assert_array_equal(x, y)
    assert audio_packets(got) == audio_packets(tmp_path / "clip.mp4")
    assert temps(tmp_path) == []
    again = invoke(*args, "-o", "ray/", "--engine", "ray", cwd=tmp_path)
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "skipped"


class MarkedRestorer:
    """The real restorer, leaving a mark per frame named by the actor process's id."""

    def __init__(self, inner: Any, folder: str) -> None:
        self.inner, self.folder = inner, folder

    def restore_rgb(self, rgb: Any, **kw: Any) -> Any:
        Path(self.folder, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
        return self.inner.restore_rgb(rgb, **kw)


def marked_factory(task: Any, settings: Any, weights: Path, *, folder: str) -> MarkedRestorer:
    from mprnet_cli.runners.ray import default_restorer

    return MarkedRestorer(default_restorer(task, settings, weights), folder)


def test_segments_restore_on_two_actors(
    tmp_path: Path, checkpoint: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers 2: the clip's four segments are shared by two actor processes (each
    restores whole segments: a multiple of 12 frames), and the output is the clip."""
    from mprnet_cli.jobs import Status, expand_inputs, plan_outputs
    from mprnet_cli.runners import RaySettings
    from mprnet_cli.runners.ray import restore_files
    from mprnet_cli.settings import RestoreSettings
    from mprnet_cli.weights import resolve

    marks = tmp_path / "marks"
    marks.mkdir()
    make_clip(tmp_path / "clip.mp4", frames=48, audio=None, gop=GOP)
    monkeypatch.chdir(tmp_path)
    expansion = expand_inputs(["clip.mp4"], suffix="_r")
    (result,) = restore_files(
        expansion.jobs,
        plan_outputs(expansion, "out/", suffix="_r"),
        weights=lambda: resolve(None, weights=checkpoint, quiet=True),
        settings=RestoreSettings(tile=0, threads=1),
        cluster=RaySettings(None, 2, None),
        factory=functools.partial(marked_factory, folder=str(marks)),
    )
    assert result.status is Status.OK, result.error
    per_actor = collections.Counter(m.name.split("-")[0] for m in marks.iterdir())
    assert len(per_actor) == 2, per_actor
    assert sorted(per_actor.values()) in ([12, 36], [24, 24])
    assert len(video_frames(tmp_path / "out" / "clip_r.mp4")[1]) == 48
