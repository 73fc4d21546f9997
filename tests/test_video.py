"""Tests for video inputs (`mprnet_cli.video`): clips made here with PyAV, restored with the
tiny checkpoint, read back with PyAV.

Frame-exactness is checked with `--video-quality 0`, which is lossless H.264 (qp 0) in the
YUV domain: the decoded output must equal, plane for plane, each decoded input frame
restored as an image and converted to the output's 4:2:0 the same way (bound: 0 code
values). At the default CRF 18 the encoder's quantisation is the only extra difference;
its bound is stated where it is checked.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

av = pytest.importorskip("av")  # the [video] extra, which dev/CI install

from mprnet_cli import video  # noqa: E402
from mprnet_cli.api import Restorer  # noqa: E402
from mprnet_cli.cli import app  # noqa: E402
from mprnet_cli.errors import UsageError  # noqa: E402
from mprnet_cli.imageio import to_uint8  # noqa: E402
from mprnet_cli.jobs import Callbacks, Status, expand_inputs, plan_outputs  # noqa: E402
from mprnet_cli.runners.local import run_batch  # noqa: E402
from mprnet_cli.video import ClipReport, VideoOptions, clip, is_video, load_clip_module  # noqa: E402

TB = Fraction(1, 12800)
STEP = 533  # ticks of 1/12800 s: ~24 frames/s
BT709, LIMITED = 1, 1


# --------------------------------------------------------------------------- clips


def make_clip(
    path: Path,
    *,
    frames: int = 48,
    width: int = 96,
    height: int = 64,
    audio: str | None = "aac",
    vfr: bool = False,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
    video: bool = True,
    gop: int | None = None,
) -> list[int]:
    """A test clip: moving gradients, BT.709 limited-range tags, metadata, a 440 Hz tone;
    `vfr` doubles every third frame's duration; `gop`: a keyframe every `gop` frames
    exactly. Returns the frames' timestamps."""
    fmt = {".mkv": "matroska", ".webm": "webm"}.get(path.suffix, "mp4")
    out = av.open(str(path), "w", format=fmt)
    out.metadata["creation_time"] = "2024-05-01T12:00:00.000000Z"
    out.metadata["location"] = "+48.8584+002.2945/"  # phone GPS (mp4 ©xyz)
    stamps: list[int] = []
    if video:
        v = out.add_stream("vp9" if fmt == "webm" else "h264", rate=24)
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        v.time_base = TB
        v.codec_context.time_base = TB
        ctx = v.codec_context
        ctx.color_primaries = ctx.color_trc = ctx.colorspace = BT709
        ctx.color_range = LIMITED
        if rotation:
            v.set_display_rotation(rotation)
        if gop is not None:
            ctx.gop_size = gop
            ctx.options = {"keyint_min": str(gop), "sc_threshold": "0"}
    a = None
    if audio is not None:
        a = out.add_stream(audio, rate=48000)
        a.layout = "stereo"
    pts = 0
    for i in range(frames if video else 0):
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 0] = (np.arange(width)[None] * 2 + i * 3) % 256
        img[..., 1] = (np.arange(height)[:, None] * 3 + i) % 256
        img[..., 2] = int(128 + 60 * np.sin(i / 5))
        rgb = "rgb48le" if "10" in pix_fmt else "rgb24"
        data = img.astype(np.uint16) * 257 if rgb == "rgb48le" else img
        f = av.VideoFrame.from_ndarray(data, format=rgb).reformat(
            format=pix_fmt, dst_colorspace=BT709, dst_color_range=LIMITED
        )
        f.pts, f.time_base = pts, TB
        stamps.append(pts)
        pts += STEP * (2 if vfr and i % 3 == 2 else 1)
        out.mux(v.encode(f))
    if video:
        out.mux(v.encode(None))
    if a is not None:
        rate, size, t0 = 48000, a.codec_context.frame_size or 960, 0
        while t0 < rate:
            t = (np.arange(size) + t0) / rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = rate, t0, Fraction(1, rate)
            out.mux(a.encode(af))
            t0 += size
        out.mux(a.encode(None))
    out.close()
    return stamps


def video_frames(path: Path) -> tuple[Any, list[Any]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.time_base, list(c.decode(s))


def audio_packets(path: Path) -> list[tuple[bytes, float]]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return [(bytes(p), float(p.pts * p.time_base)) for p in c.demux(s) if p.size]


def planes(frame: Any) -> list[npt.NDArray[np.uint8]]:
    """A yuv420p frame's three planes without the line padding."""
    out = []
    for plane, (w, h) in zip(
        frame.planes,
        [(frame.width, frame.height), *[(frame.width // 2, frame.height // 2)] * 2],
        strict=True,
    ):
        rows = np.frombuffer(bytes(plane), np.uint8).reshape(-1, plane.line_size)
        out.append(rows[:h, :w])
    return out


@pytest.fixture(scope="module")
def restorer(checkpoint: Path) -> Restorer:
    return Restorer(weights=checkpoint, device="cpu", backend="torch", precision="fp32", tile=0)


def restore_file(src: Path, dst: Path, restorer: Restorer, **kw: Any) -> ClipReport:
    options = kw.pop("options", VideoOptions())

    def frame_fn(width: int, height: int) -> Callable[[Any], Any]:
        return lambda rgb: restorer.restore_rgb(rgb)[0]

    return clip.restore_video(src, dst, frame_fn, options=options, overwrite=False, **kw)


# --------------------------------------------------------------------------- what is kept


def test_vfr_rotation_audio_colour_and_metadata_are_kept(
    tmp_path: Path, restorer: Restorer
) -> None:
    src, dst = tmp_path / "phone.mp4", tmp_path / "out.mp4"
    stamps = make_clip(src, frames=24, vfr=True, rotation=90)
    report = restore_file(src, dst, restorer)

    assert report.frames == 24
    tb_in, before = video_frames(src)
    tb_out, after = video_frames(dst)
    assert [f.pts for f in before] == stamps  # the clip really is VFR
    assert len(set(np.diff(stamps))) == 2
    assert tb_out == tb_in
    assert [f.pts for f in after] == stamps
    assert {f.rotation for f in after} == {90}
    first = after[0]
    assert (first.color_primaries, first.color_trc, first.colorspace) == (BT709,) * 3
    assert first.color_range == LIMITED
    assert first.format.name == "yuv420p"
    assert audio_packets(dst) == audio_packets(src)  # bytes and times, packet for packet
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert b.metadata["creation_time"] == a.metadata["creation_time"]
        assert b.metadata["location"] == a.metadata["location"] == "+48.8584+002.2945/"
        assert b.streams.video[0].codec_context.name == "h264"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_opus_in_matroska_is_copied_and_10_bit_stays_10_bit(
    tmp_path: Path, restorer: Restorer
) -> None:
    src, dst = tmp_path / "deep.mkv", tmp_path / "out.mkv"
    make_clip(src, audio="libopus", pix_fmt="yuv420p10le", frames=12)
    restore_file(src, dst, restorer)
    _, after = video_frames(dst)
    assert len(after) == 12
    assert after[0].format.name == "yuv420p10le"
    assert audio_packets(dst) == audio_packets(src)


SRT = "1\n00:00:00,000 --> 00:00:00,400\nRain stops\n\n2\n00:00:01,000 --> 00:00:01,500\nSun\n"
ASS = (
    "[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize\n"
    "Style: Default,Arial,20\n\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, "
    "MarginR, MarginV, Effect, Text\nDialogue: 0,0:00:00.00,0:00:00.40,Default,,0,0,0,,Rain\n"
)


def add_subtitles(clip_path: Path, texts: list[Path], dst: Path) -> None:
    """`clip_path`'s streams plus one subtitle stream per file in `texts` (.srt, .ass),
    remuxed into `dst` (Matroska): PyAV reads subtitle files but encodes no text ones."""
    sources = [av.open(str(clip_path)), *(av.open(str(t)) for t in texts)]
    try:
        with av.open(str(dst), "w", format="matroska") as out:
            pairs = [(s, out.add_stream_from_template(s)) for c in sources for s in c.streams]
            for (src_stream, copy), container in zip(
                pairs, [c for c in sources for _ in c.streams], strict=True
            ):
                for packet in container.demux(src_stream):
                    if packet.size:
                        packet.stream = copy
                        out.mux(packet)
    finally:
        for c in sources:
            c.close()


def subtitle_packets(path: Path) -> list[list[tuple[bytes, int | None]]]:
    with av.open(str(path)) as c:
        streams = list(c.streams.subtitles)
        if not streams:
            return []
        out: dict[int, list[tuple[bytes, int | None]]] = {s.index: [] for s in streams}
        for p in c.demux(*streams):
            if p.size:
                out[p.stream.index].append((bytes(p), p.pts))
        return list(out.values())


def unchanged(width: int, height: int) -> Callable[[Any], Any]:
    """A frame function that restores nothing: for tests of what a clip keeps."""
    return lambda rgb: rgb


def test_srt_and_ass_subtitles_are_copied_into_matroska_and_named_when_mp4_drops_them(
    tmp_path: Path,
) -> None:
    base, src = tmp_path / "base.mkv", tmp_path / "subbed.mkv"
    make_clip(base, frames=24, gop=8)
    (tmp_path / "a.srt").write_text(SRT)
    (tmp_path / "b.ass").write_text(ASS)
    add_subtitles(base, [tmp_path / "a.srt", tmp_path / "b.ass"], src)
    want = subtitle_packets(src)
    assert [len(w) for w in want] == [2, 1]  # the clip really holds both
    options = VideoOptions()
    clip.restore_video(src, tmp_path / "out.mkv", unchanged, options=options, overwrite=False)
    assert subtitle_packets(tmp_path / "out.mkv") == want
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert [s.codec_context.name for s in c.streams.subtitles] == ["srt", "ssa"]
    # the Ray engine's join copies them the same way
    bounds, _ = clip.plan_segments(src, 8)
    assert len(bounds) == 3
    segments = [
        clip.restore_segment(src, a, b, unchanged, options=options, muxer="matroska")
        for a, b in bounds
    ]
    clip.join_segments(
        src, tmp_path / "joined.mkv", iter(segments), options=options, overwrite=False
    )
    assert subtitle_packets(tmp_path / "joined.mkv") == want
    assert audio_packets(tmp_path / "joined.mkv") == audio_packets(src)
    # MP4 holds only mov_text: the text streams are left out, each with a note saying so
    report = clip.restore_video(
        src, tmp_path / "out.mp4", unchanged, options=options, overwrite=False
    )
    assert subtitle_packets(tmp_path / "out.mp4") == []
    dropped = [n for n in report.notes if "subtitle stream" in n]
    assert len(dropped) == 2 and all("write .mkv to keep it" in n for n in dropped)


def test_frames_equal_an_image_by_image_restore_at_lossless_quality(
    tmp_path: Path, restorer: Restorer
) -> None:
    """--video-quality 0 is lossless H.264: the output's planes equal each decoded input
    frame restored as an image and converted to 4:2:0 with the clip's matrix and range
    (bound 0). At the default CRF 18 the x264 quantiser adds an error whose RMS for these
    smooth frames is well under 2 code values (PSNR > 40 dB); 35 dB leaves room for
    encoder versions while still failing for a shifted, swapped or unrestored frame
    (those measure < 25 dB here)."""
    src = tmp_path / "in.mp4"
    make_clip(src, frames=10, audio=None)
    lossless, default = tmp_path / "q0.mp4", tmp_path / "q18.mp4"
    restore_file(src, lossless, restorer, options=VideoOptions(quality=0))
    restore_file(src, default, restorer)

    _, inputs = video_frames(src)
    _, exact = video_frames(lossless)
    _, lossy = video_frames(default)
    assert len(exact) == len(lossy) == len(inputs) == 10
    for frame, got, approx in zip(inputs, exact, lossy, strict=True):
        rgb = frame.reformat(
            format="rgb24", src_colorspace=BT709, src_color_range=LIMITED
        ).to_ndarray()
        clean = to_uint8(restorer.restore_rgb(rgb.astype(np.float32) / 255)[0])
        want = av.VideoFrame.from_ndarray(clean, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=BT709, dst_color_range=LIMITED
        )
        for a, b in zip(planes(got), planes(want), strict=True):
            np.testing.assert_array_equal(a, b)
        err = np.concatenate(
            [
                (a.astype(float) - b).ravel()
                for a, b in zip(planes(approx), planes(want), strict=True)
            ]
        )
        assert 10 * np.log10(255**2 / max(np.mean(err**2), 1e-12)) > 35
        unrestored = planes(frame)[0].astype(float) - planes(want)[0]
        assert 10 * np.log10(255**2 / np.mean(unrestored**2)) < 35  # the check can fail


# --------------------------------------------------------------------------- faults


def test_ctrl_c_leaves_no_output_and_no_temp_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src)
    seen = []

    def frame_fn(width: int, height: int) -> Callable[[Any], Any]:
        def run(rgb: Any) -> Any:
            seen.append(1)
            if len(seen) == 20:
                raise KeyboardInterrupt
            return rgb

        return run

    with pytest.raises(KeyboardInterrupt):
        clip.restore_video(src, dst, frame_fn, options=VideoOptions(), overwrite=False)
    assert len(seen) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_failing_network_fails_the_clip_cleanly(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, frames=8)

    def frame_fn(width: int, height: int) -> Callable[[Any], Any]:
        def run(rgb: Any) -> Any:
            raise UsageError("boom")

        return run

    with pytest.raises(UsageError, match="boom"):
        clip.restore_video(src, dst, frame_fn, options=VideoOptions(), overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_truncated_clips_fail_or_warn_cleanly(tmp_path: Path, checkpoint: Path) -> None:
    """An MP4 cut short loses its index (moov is written last): a one-line failure. A
    Matroska file cut short plays up to the cut: restored with what is there, and a
    damaged last packet is reported with its timestamp."""
    mp4, mkv = tmp_path / "cut.mp4", tmp_path / "cut.mkv"
    make_clip(mp4)
    make_clip(mkv)
    for path in (mp4, mkv):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    result = CliRunner().invoke(
        app, ["derain", str(mp4), str(mkv), "-w", str(checkpoint), "--json", "-q", "--tile", "0"]
    )
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    by_input = {Path(r["input"]).name: r for r in lines}
    assert by_input["cut.mp4"]["status"] == "failed"
    assert "damaged or truncated" in by_input["cut.mp4"]["error"]
    assert not (tmp_path / "cut_derained.mp4").exists()
    assert by_input["cut.mkv"]["status"] == "ok"
    _, frames = video_frames(tmp_path / "cut_derained.mkv")
    _, readable = video_frames(mkv)
    assert 0 < len(frames) == len(readable) < 48
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_damaged_packet_is_skipped_with_its_time_or_fails_when_strict(tmp_path: Path) -> None:
    src = tmp_path / "in.mkv"
    make_clip(src, audio=None)
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
    victim = packets[20]
    start = data.find(bytes(victim))
    assert start > 0
    data[start : start + victim.size] = b"\xff" * victim.size  # garbage in place of frame 20
    src.write_bytes(bytes(data))

    report = clip.restore_video(
        src, tmp_path / "out.mkv", lambda w, h: lambda x: x, options=VideoOptions(), overwrite=False
    )
    assert report.notes, "the damaged packet is reported"
    assert "s could not be decoded" in report.notes[0]
    assert report.frames < 48
    with pytest.raises(clip.VideoError, match="--video-strict"):
        clip.restore_video(
            src,
            tmp_path / "strict.mkv",
            lambda w, h: lambda x: x,
            options=VideoOptions(strict=True),
            overwrite=False,
        )
    assert not (tmp_path / "strict.mkv").exists()


def test_no_video_stream_and_unknown_codec_are_clear_errors(tmp_path: Path) -> None:
    sound = tmp_path / "sound.mkv"
    make_clip(sound, video=False)
    with pytest.raises(clip.VideoError, match="no video stream"):
        clip.restore_video(
            sound,
            tmp_path / "o.mkv",
            lambda w, h: lambda x: x,
            options=VideoOptions(),
            overwrite=False,
        )
    src = tmp_path / "in.mp4"
    make_clip(src, frames=4, audio=None)
    with pytest.raises(UsageError, match="--video-codec nope"):
        clip.restore_video(
            src,
            tmp_path / "o.mp4",
            lambda w, h: lambda x: x,
            options=VideoOptions(codec="nope"),
            overwrite=False,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "sound.mkv"]


def test_codec_and_pixel_format_choices() -> None:
    assert clip._choose_codec("h264", None, set()).name == "libx264"
    assert clip._choose_codec("no-such-codec", None, set()).name == "libx264"  # fallback
    assert clip._choose_codec("no-such-codec", None, {"vp9", "opus"}).name == "libvpx-vp9"
    x264 = av.Codec("libx264", "w")
    fmt = av.VideoFormat
    assert clip._pixel_format(fmt("yuv420p"), x264) == "yuv420p"
    assert clip._pixel_format(fmt("yuv422p10le"), x264) == "yuv422p10le"
    mpeg4 = av.Codec("mpeg4", "w")  # 8-bit 4:2:0 only
    assert clip._pixel_format(fmt("yuv420p10le"), mpeg4) == "yuv420p"
    assert clip._pixel_format(fmt("p010le"), x264) == "yuv420p10le"  # same family


def test_without_pyav_one_line_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.delitem(sys.modules, "mprnet_cli.video.clip")
    import mprnet_cli.video as video

    monkeypatch.delattr(video, "clip")
    with pytest.raises(UsageError, match=r"pip install 'mprnet-cli\[video\]'"):
        load_clip_module()


# --------------------------------------------------------------------------- the runner and CLI


def test_folders_pick_up_clips_and_outputs_keep_the_container(tmp_path: Path) -> None:
    (tmp_path / "a.MOV").write_bytes(b"")
    (tmp_path / "b.webm").write_bytes(b"")
    (tmp_path / "c.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    expansion = expand_inputs([str(tmp_path)], suffix="_derained")
    assert sorted(j.source.name for j in expansion.jobs) == ["a.MOV", "b.webm", "c.png"]  # type: ignore[union-attr]
    plan = plan_outputs(expansion, None, suffix="_derained")
    names = {j.source.name: plan.predict(j).name for j in expansion.jobs}  # type: ignore[union-attr]
    assert names["a.MOV"] == "a_derained.MOV"
    assert names["b.webm"] == "b_derained.webm"
    assert is_video("x.M4V") and not is_video("x.png")


def test_run_batch_tiles_once_progress_frames_and_rerun_skips(
    tmp_path: Path, restorer: Restorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.mp4"
    make_clip(src, frames=6)
    expansion = expand_inputs([str(src)], suffix="_x")
    plan = plan_outputs(expansion, None, suffix="_x")
    planned: list[tuple[int, int]] = []
    real = Restorer.clip_tiles

    def spy(self: Restorer, height: int, width: int) -> Any:
        planned.append((height, width))
        return real(self, height, width)

    monkeypatch.setattr(Restorer, "clip_tiles", spy)
    progress: list[tuple[int, int | None]] = []
    callbacks = Callbacks(frames=lambda d, t: progress.append((d, t)))
    (result,) = run_batch(expansion.jobs, restorer, plan, callbacks=callbacks)
    assert result.status is Status.OK, result.error
    assert planned == [(64, 96)]  # once per clip, not per frame
    assert progress == [(i, 6) for i in range(1, 7)]
    assert (tmp_path / "in_x.mp4").is_file()
    (again,) = run_batch(expansion.jobs, lambda: pytest.fail("no network for a skip"), plan)
    assert again.status is Status.SKIPPED


def test_cli_end_to_end_in_a_subprocess(tmp_path: Path, checkpoint: Path) -> None:
    make_clip(tmp_path / "clip.mp4", frames=8)
    cmd = [sys.executable, "-m", "mprnet_cli", "derain", "clip.mp4", "-w", str(checkpoint)]
    cmd += ["--tile", "0", "--threads", "1", "--json", "--video-quality", "23"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=180, check=False)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert (record["status"], record["output"]) == ("ok", "clip_derained.mp4")
    assert (record["width"], record["height"], record["tiles"]) == (96, 64, 8)
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=180, check=False)
    assert json.loads(second.stdout)["status"] == "skipped"


def test_cli_refusals_are_one_line(tmp_path: Path, checkpoint: Path) -> None:
    make_clip(tmp_path / "clip.mp4", frames=2, audio=None)
    runner = CliRunner()
    png = runner.invoke(
        app,
        [
            "derain",
            str(tmp_path / "clip.mp4"),
            "-o",
            str(tmp_path / "x.png"),
            "-w",
            str(checkpoint),
        ],
    )
    assert png.exit_code == 1
    assert "a video is written as a video" in png.stderr
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- flicker


def test_deflicker_averages_a_still_scene_and_leaves_motion_alone() -> None:
    """Independent per-frame wobble of sd 2/255 on a still scene: the recursive blend with
    s = 0.5 must cut the consecutive-frame difference (theory: variance x (1-s)/(1+s), so
    MAD x ~0.58 in the steady state; asserted < 0.75 for 40 random frames). A moving edge
    (change far above the tolerance) must pass through bit for bit."""
    rng = np.random.default_rng(3)
    still = rng.random((32, 48, 3), dtype=np.float32)
    frames = [still + rng.normal(0, 2 / 255, still.shape).astype(np.float32) for _ in range(40)]

    def mad(xs: list[Any]) -> float:
        return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(xs)]))

    blend = video.Deflicker(0.5)
    smoothed = [blend(f) for f in frames]
    assert mad(smoothed) < 0.75 * mad(frames)
    assert np.abs(np.mean(smoothed[10:], axis=0) - still).max() < 4 / 255  # no drift

    moving = video.Deflicker(0.5)
    a = np.zeros((8, 8, 3), np.float32)
    b = a.copy()
    b[:, 4:] = 1.0  # an edge moved in: every changed pixel differs by 1.0
    moving(a)
    out = moving(b)
    np.testing.assert_array_equal(out[:, 4:], b[:, 4:])
    assert video.Deflicker(0.0)(b) is b  # off: the frame itself


def test_deflicker_option_reaches_the_clip(tmp_path: Path, checkpoint: Path) -> None:
    """--video-deflicker changes a noisy still clip's output and lowers its flicker."""
    src = tmp_path / "still.mkv"
    make_clip(src, frames=12, audio=None)  # moving gradients: replace with a still + noise
    rng = np.random.default_rng(5)
    base = rng.integers(40, 200, (64, 96, 3), dtype=np.uint8)
    out = av.open(str(src), "w", format="matroska")
    v = out.add_stream("h264", rate=24)
    v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
    v.codec_context.options = {"crf": "0"}
    for i in range(12):
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        f = av.VideoFrame.from_ndarray(noisy, format="rgb24")
        f.pts, f.time_base = i, Fraction(1, 24)
        out.mux(v.encode(f))
    out.mux(v.encode(None))
    out.close()
    args = ["denoise", str(src), "-w", str(checkpoint), "-q", "--tile", "0", "--video-quality", "0"]
    plain = CliRunner().invoke(app, [*args, "--suffix", "_a"])
    steady = CliRunner().invoke(app, [*args, "--suffix", "_b", "--video-deflicker", "0.8"])
    assert plain.exit_code == steady.exit_code == 0, plain.output + steady.output

    def mad(path: Path) -> float:
        _, frames = video_frames(path)
        xs = [f.to_ndarray(format="rgb24").astype(float) for f in frames]
        return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(xs)]))

    assert mad(tmp_path / "still_b.mkv") < 0.8 * mad(tmp_path / "still_a.mkv")


def test_only_the_clip_module_imports_av() -> None:
    """PyAV is optional: one module imports it, so the rest (and `mprnet --help`) never do."""
    import re

    root = Path(video.__file__).resolve().parent.parent
    importers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"^\s*(import av\b|from av[\s.])", p.read_text(encoding="utf-8"), re.M)
    )
    assert importers == ["video/clip.py"]


def test_output_folder_other_container_and_overwrite(tmp_path: Path, checkpoint: Path) -> None:
    src = tmp_path / "in" / "clip.mp4"
    src.parent.mkdir()
    make_clip(src, frames=4)
    base = ["derain", "-w", str(checkpoint), "-q", "--tile", "0", "--json"]
    runner = CliRunner()
    into = runner.invoke(app, [*base, str(tmp_path / "in"), "-o", str(tmp_path / "out")])
    assert into.exit_code == 0, into.output
    assert (tmp_path / "out" / "clip_derained.mp4").is_file()
    mkv = tmp_path / "clip.mkv"
    remux = runner.invoke(app, [*base, str(src), "-o", str(mkv)])
    assert remux.exit_code == 0, remux.output
    with av.open(str(mkv)) as c:
        assert c.format.name.startswith("matroska")
        assert len(list(c.decode(video=0))) == 4
    # the same packets; Matroska cannot start below 0, so the muxer shifts every stream
    # alike by MP4's AAC priming (-1024 samples) and rounds to its 1 ms time base
    assert [b for b, _ in audio_packets(mkv)] == [b for b, _ in audio_packets(src)]
    before = mkv.stat().st_mtime_ns
    again = runner.invoke(app, [*base, str(src), "-o", str(mkv)])
    assert json.loads(again.stdout)["status"] == "skipped"
    forced = runner.invoke(app, [*base, str(src), "-o", str(mkv), "--overwrite"])
    assert json.loads(forced.stdout)["status"] == "ok"
    assert mkv.stat().st_mtime_ns != before
    assert not [p for p in tmp_path.rglob("*.tmp")]
