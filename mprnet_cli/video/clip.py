"""Decode -> restore -> encode one clip with PyAV: the only module that imports `av`.

Three threads: this module's decode thread demuxes every kept stream and decodes the video
to float RGB, the caller's thread runs the network, and the encode thread converts back to
the input's pixel format and muxes, copying the other streams' packets untouched in demux
order. Bounded queues between them hold `VideoOptions.queue` items each, so memory does not
grow with the clip's length. See the package docstring for what is kept.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import av.error
import numpy as np
import numpy.typing as npt

from mprnet_cli.errors import OutputError, UsageError
from mprnet_cli.imageio import to_uint8, to_uint16
from mprnet_cli.imageio.atomic import commit_temp, create_temp
from mprnet_cli.video.base import (
    ClipReport,
    FrameFn,
    FrameProgress,
    Segment,
    VideoError,
    VideoOptions,
)

#: Output extension -> FFmpeg muxer.
MUXERS: Final = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
}
#: The codec written when the input's has no encoder here (or the container refuses it).
FALLBACK_CODECS: Final = ("h264", "vp9")
_END: Final = object()


@dataclass
class _Clip:
    """What the threads share: the stop flag, the first failure, the notes."""

    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    notes: list[str] = field(default_factory=list)
    frames_in: int = 0


def _seconds(ts: int | None, time_base: Fraction | None) -> str:
    if ts is None or time_base is None:
        return "an unknown time"
    return f"{float(ts * time_base):.3f} s"


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the clip is being stopped (False then): never blocks a stopping run."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def _open_input(source: Path) -> Any:
    try:
        return av.open(str(source), "r")
    except FileNotFoundError:
        raise VideoError(f"{source}: no such file") from None
    except PermissionError:
        raise VideoError(f"{source}: permission denied") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(
            f"{source}: cannot read this video ({_ffmpeg_reason(exc)}); it may be damaged or "
            "truncated"
        ) from None


def _ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


def _video_stream(container: Any, source: Path, threads: int = 0) -> Any:
    streams = list(container.streams.video)
    if not streams:
        raise VideoError(
            f"{source}: no video stream in this file (audio only?); nothing to restore"
        )
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoError(f"{source}: its video codec cannot be decoded by this PyAV build")
    stream.codec_context.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream


def _encoder(name: str) -> Any | None:
    try:
        return av.Codec(name, "w")
    except Exception:  # UnknownCodecError, or a decoder-only codec
        return None


def _choose_codec(in_codec: str, wanted: str | None, supported: set[str]) -> Any:
    """The encoder: `wanted`, else the input's when it has one and the container takes it,
    else H.264 (VP9 where the container takes no H.264: WebM)."""
    if wanted is not None:
        codec = _encoder(wanted)
        if codec is None:
            raise UsageError(
                f"--video-codec {wanted}: no encoder for it in this PyAV build; try h264, "
                "hevc, vp9 or av1"
            )
        if supported and codec.name not in supported and wanted not in supported:
            raise UsageError(
                f"--video-codec {wanted}: this container cannot hold it; choose another "
                "codec or another output extension (.mkv holds most)"
            )
        return codec
    for name in (in_codec, *FALLBACK_CODECS):
        codec = _encoder(name)
        if codec is not None and (not supported or name in supported):
            return codec
    raise VideoError(f"no encoder here for {in_codec} or {', '.join(FALLBACK_CODECS)}")


def _pixel_format(in_format: Any, codec: Any) -> str:
    """The input's pixel format when the encoder takes it, else the same family: the same
    chroma subsampling and bit depth (10-bit only where the encoder has it), else 4:2:0."""
    offered = [f.name for f in (codec.video_formats or ())]
    name = in_format.name
    if name in offered or not offered:
        return str(name)
    deep = max(c.bits for c in in_format.components) > 8
    side = 64  # chroma planes of a 64x64 picture tell the subsampling
    sub = {(1, 1): "420", (1, 0): "422", (0, 0): "444"}.get(
        (int(in_format.chroma_width(side) < side), int(in_format.chroma_height(side) < side)),
        "420",
    )
    for candidate in (
        f"yuv{sub}p{'10le' if deep else ''}",
        f"yuv420p{'10le' if deep else ''}",
        "yuv420p",
    ):
        if candidate in offered:
            return candidate
    return str(offered[0])


def _quality_options(codec_name: str, quality: int) -> dict[str, str]:
    """The CRF-like `quality` in each encoder's own terms."""
    if codec_name == "libx265":  # x265 logs to stderr by itself unless told not to
        return {"crf": str(quality), "x265-params": "log-level=error"}
    if codec_name == "libsvtav1":  # SVT-AV1 logs its whole configuration unless told not to
        os.environ.setdefault("SVT_LOG", "1")  # errors only; read when the encoder opens
        return {"crf": str(quality)}
    if codec_name == "libx264":
        return {"crf": str(quality)}
    if codec_name in ("libvpx-vp9", "libvpx", "libaom-av1"):
        return {"crf": str(quality), "b": "0"}
    # mpeg4 and other q-scale encoders: map CRF 0-51 onto qscale 1-31
    return {"qscale": str(max(1, min(31, round(1 + quality * 30 / 51))))}


class _Converter:
    """Frames <-> float RGB with the input's colour matrix and range, both ways."""

    def __init__(self, first: Any, pix_fmt: str) -> None:
        self.width, self.height = first.width, first.height
        self.deep = max(c.bits for c in first.format.components) > 8
        self.colorspace = first.colorspace
        self.color_range = first.color_range
        self.pix_fmt = pix_fmt
        self.rgb = "rgb48le" if self.deep else "rgb24"

    def to_rgb(self, frame: Any) -> npt.NDArray[np.float32]:
        rgb = frame.reformat(
            width=self.width,
            height=self.height,
            format=self.rgb,
            src_colorspace=self.colorspace,
            src_color_range=self.color_range,
        ).to_ndarray()
        scale = np.float32(65535.0 if self.deep else 255.0)
        out: npt.NDArray[np.float32] = np.asarray(rgb, dtype=np.float32) / scale
        return out

    def to_frame(self, rgb: npt.NDArray[np.float32]) -> Any:
        pixels: Any = to_uint16(rgb) if self.deep else to_uint8(rgb)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=self.rgb)
        return frame.reformat(
            format=self.pix_fmt,
            dst_colorspace=self.colorspace,
            dst_color_range=self.color_range,
        )


def restore_video(
    source: Path,
    target: Path,
    frame_fn: Callable[[int, int], FrameFn],
    *,
    options: VideoOptions,
    overwrite: bool,
    progress: FrameProgress | None = None,
) -> ClipReport:
    """Restore `source` into `target` (see the module docstring); `frame_fn(width, height)`
    is called once, after the first frame decoded, and returns the per-frame restore.

    Raises `VideoError`/`UsageError` for the clip's own problems, `OutputError` for the
    output's (`OutputExistsError` when it appeared meanwhile), and lets KeyboardInterrupt
    through; in every case no output file and no temporary file are left."""
    inp = _open_input(source)
    try:
        return _restore_open(inp, source, target, frame_fn, options, overwrite, progress)
    finally:
        inp.close()


def _restore_open(
    inp: Any,
    source: Path,
    target: Path,
    frame_fn: Callable[[int, int], FrameFn],
    options: VideoOptions,
    overwrite: bool,
    progress: FrameProgress | None,
) -> ClipReport:
    vin = _video_stream(inp, source, options.codec_threads)
    muxer = MUXERS.get(target.suffix.lower())
    if muxer is None:
        raise UsageError(f"{target}: cannot write {target.suffix} video; use .mp4, .mkv or .mov")
    state = _Clip()
    others = [s for s in inp.streams if s.index != vin.index and s.type != "attachment"]
    items = _demux(inp, vin, others, state, options.strict)
    head: list[tuple[str, Any]] = []
    for item in items:
        head.append(item)
        if item[0] == "frame":
            break
    else:
        raise VideoError(f"{source}: no video frame could be decoded")
    first = head[-1][1]

    folder = target.parent
    try:
        tmp, fd = create_temp(folder, target.name)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write here ({_ffmpeg_reason(exc)})") from None
    os.close(fd)
    try:
        out = av.open(str(tmp), "w", format=muxer)
        try:
            report = _run(
                inp, vin, others, out, head, items, first, frame_fn, options, state, progress
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the first failure is the one to report
                out.close()
            raise
        try:
            out.close()  # the trailer (MP4's index) is written here
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"{target}: cannot finish writing ({_ffmpeg_reason(exc)})") from None
        commit_temp(tmp, target, overwrite=overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return report


def _demux(
    inp: Any, vin: Any, others: list[Any], state: _Clip, strict: bool
) -> Iterator[tuple[str, Any]]:
    """("frame", VideoFrame) and ("packet", Packet) items in demux order; a damaged packet
    is skipped with a note (a `VideoError` when `strict`), as is a read error mid-file."""
    decoder = vin.codec_context
    tb = vin.time_base

    def damaged(what: str, ts: int | None, exc: BaseException) -> None:
        _damaged(state, strict, f"{what} at {_seconds(ts, tb)}", exc)

    packets = inp.demux(vin, *others)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except (av.error.FFmpegError, OSError) as exc:
            damaged("the file", None, exc)
            break
        if packet.stream.index != vin.index:
            if packet.size:
                yield "packet", packet
            continue
        try:
            frames = decoder.decode(packet if packet.size else None)
        except av.error.FFmpegError as exc:
            damaged("a video packet", packet.pts, exc)
            continue
        for frame in frames:
            yield "frame", frame
    with contextlib.suppress(av.error.FFmpegError, ValueError):
        for frame in decoder.decode(None):  # frames still held by the decoder
            yield "frame", frame


def _damaged(state: _Clip, strict: bool, what: str, exc: BaseException) -> None:
    """A damaged part: a note, and skipped; with `strict`, the clip fails instead."""
    note = f"{what} could not be decoded ({_ffmpeg_reason(exc)})"
    if strict:
        raise VideoError(f"{note}; drop --video-strict to skip damaged parts") from None
    state.notes.append(f"{note}; skipped")


def _add_copies(inp: Any, others: list[Any], out: Any, notes: list[str]) -> dict[int, Any]:
    """Output streams for the streams copied as packets: those the container can hold."""
    supported = set(out.supported_codecs)
    same_family = inp.format.name.split(",")[0] in out.format.name.split(",")
    copies: dict[int, Any] = {}
    for s in others:
        name = s.codec_context.name if s.codec_context is not None else None
        if s.type == "data" and not same_family:
            notes.append(f"data stream #{s.index} left out: {out.format.name} cannot hold it")
            continue
        if name is not None and supported and name not in supported:
            notes.append(
                f"{s.type} stream #{s.index} ({name}) left out: {out.format.name} cannot hold "
                "it; write .mkv to keep it"
            )
            continue
        try:
            copy = out.add_stream_from_template(s)
        except (av.error.FFmpegError, ValueError) as exc:
            notes.append(f"{s.type} stream #{s.index} left out ({_ffmpeg_reason(exc)})")
            continue
        copy.metadata.update(s.metadata)
        copies[s.index] = copy
    return copies


def _add_video(vin: Any, first: Any, out: Any, options: VideoOptions) -> tuple[Any, _Converter]:
    """The output video stream: the input's codec (or the fallback), its time base, rate,
    size, colour tags, rotation and pixel-format family."""
    in_ctx = vin.codec_context
    codec = _choose_codec(in_ctx.name, options.codec, set(out.supported_codecs))
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    vout = out.add_stream(codec.name, rate=rate)
    pix_fmt = _pixel_format(first.format, codec)
    vout.width, vout.height = first.width, first.height
    vout.pix_fmt = pix_fmt
    vout.time_base = vin.time_base
    ctx = vout.codec_context
    ctx.time_base = vin.time_base
    for tag in ("color_primaries", "color_trc", "colorspace", "color_range"):
        setattr(ctx, tag, getattr(first, tag))
    if in_ctx.sample_aspect_ratio:
        ctx.sample_aspect_ratio = in_ctx.sample_aspect_ratio
    ctx.options = _quality_options(codec.name, options.quality)
    ctx.thread_count = options.codec_threads
    rotation = first.rotation
    if rotation:
        vout.set_display_rotation(rotation)
    vout.metadata.update({k: v for k, v in vin.metadata.items() if k in ("language", "title")})
    return vout, _Converter(first, pix_fmt)


def _run(
    inp: Any,
    vin: Any,
    others: list[Any],
    out: Any,
    head: list[tuple[str, Any]],
    items: Iterator[tuple[str, Any]],
    first: Any,
    frame_fn: Callable[[int, int], FrameFn],
    options: VideoOptions,
    state: _Clip,
    progress: FrameProgress | None,
) -> ClipReport:
    out.metadata.update({k: v for k, v in inp.metadata.items() if k != "encoder"})
    copies = _add_copies(inp, others, out, state.notes)
    vout, conv = _add_video(vin, first, out, options)
    restore = frame_fn(conv.width, conv.height)
    total = vin.frames or None
    raw: queue.Queue[Any] = queue.Queue(options.queue)
    done: queue.Queue[Any] = queue.Queue(options.queue)

    def fail(exc: BaseException) -> None:
        if state.error is None:
            state.error = exc
        state.stop.set()

    def decode() -> None:
        try:
            for kind, payload in _chain(head, items):
                if kind == "frame":
                    item: tuple[str, Any] = ("frame", (conv.to_rgb(payload), payload.pts))
                else:
                    item = (kind, payload)
                if not _put(raw, item, state.stop):
                    return
            _put(raw, _END, state.stop)
        except BaseException as exc:
            fail(exc)

    def encode() -> None:
        try:
            while True:
                item = _get(done, state.stop)
                if item is _END:
                    break
                kind, payload = item
                if kind == "frame":
                    pixels, pts = payload
                    frame = conv.to_frame(pixels)
                    frame.pts, frame.time_base = pts, vin.time_base
                    out.mux(vout.encode(frame))
                else:
                    copy = copies.get(payload.stream.index)
                    if copy is not None:
                        payload.stream = copy
                        out.mux(payload)
            if not state.stop.is_set():
                out.mux(vout.encode(None))
        except BaseException as exc:
            fail(exc)

    threads = [
        threading.Thread(target=decode, name="mprnet-video-decode", daemon=True),
        threading.Thread(target=encode, name="mprnet-video-encode", daemon=True),
    ]
    for t in threads:
        t.start()
    frames = 0
    try:
        while True:
            item = _get(raw, state.stop)
            if item is _END:
                break
            kind, payload = item
            if kind == "frame":
                pixels, pts = payload
                item = ("frame", (restore(pixels), pts))
                frames += 1
                if progress is not None:
                    progress(frames, total)
            if not _put(done, item, state.stop):
                break
            del item, payload
        _put(done, _END, state.stop)
        threads[1].join()
    except BaseException as exc:
        fail(exc)
        raise
    finally:
        state.stop.set()
        for t in threads:
            t.join()
    if state.error is not None:
        raise _as_error(state.error)
    return ClipReport(
        frames=frames,
        width=conv.width,
        height=conv.height,
        codec=vout.codec_context.name,
        notes=tuple(state.notes),
    )


def _chain(
    head: list[tuple[str, Any]], rest: Iterator[tuple[str, Any]]
) -> Iterator[tuple[str, Any]]:
    yield from head
    head.clear()  # the first frame is not held for the whole clip
    yield from rest


def _as_error(exc: BaseException) -> BaseException:
    """A worker thread's failure as the caller should see it: FFmpeg's as a `VideoError`."""
    if isinstance(exc, av.error.FFmpegError):
        return VideoError(f"video encoding or decoding failed ({_ffmpeg_reason(exc)})")
    return exc


# --------------------------------------------------------------------------- segments


def plan_segments(source: Path, min_frames: int) -> tuple[list[tuple[int | None, int | None]], int]:
    """The clip cut at its keyframes into `[start, end)` ranges of presentation time (the
    video stream's time base; None: the clip's start or end), each at least `min_frames`
    frames long but the last, and its count of video packets (its frames, as a rule);
    found by demuxing alone (nothing is decoded). A clip with one keyframe interval, or
    whose packets have no timestamps, is one segment."""
    inp = _open_input(source)
    try:
        vin = _video_stream(inp, source)
        starts: list[int] = []
        since = count = 0
        timed = True
        for packet in inp.demux(vin):
            if not packet.size:
                continue
            count += 1
            timed = timed and packet.pts is not None
            if timed and packet.is_keyframe and (not starts or since >= min_frames):
                starts.append(packet.pts)
                since = 0
            since += 1
    except (av.error.FFmpegError, OSError):
        pass  # damage: the last segment runs to wherever its decoding stops
    finally:
        inp.close()
    if not timed:
        starts = []
    elif since < min_frames and len(starts) > 1:
        starts.pop()  # a short tail joins the segment before it
    bounds: list[int | None] = [None, *starts[1:], None]
    return list(itertools.pairwise(bounds)), count


def restore_segment(
    source: Path,
    start: int | None,
    end: int | None,
    frame_fn: Callable[[int, int], FrameFn],
    *,
    options: VideoOptions,
    muxer: str,
) -> Segment:
    """Restore the frames of `source` whose timestamps are in `[start, end)` and encode
    them as `restore_video` would for a `muxer` output (a fresh encoder: the segment
    starts with a keyframe). Decoding starts at the keyframe `start` and runs on past
    `end`'s keyframe only for the pictures shown before it (open GOPs)."""
    inp = _open_input(source)
    try:
        vin = _video_stream(inp, source, options.codec_threads)
        packets = _segment_packets(inp, vin, source, start, end)
        return _encode_segment(inp, vin, packets, start, end, frame_fn, options, muxer)
    finally:
        inp.close()


def _segment_packets(
    inp: Any, vin: Any, source: Path, start: int | None, end: int | None
) -> Iterator[Any]:
    """The video packets to decode for `[start, end)`: from the keyframe at `start`
    (found by seeking, else by reading from the top) to the first packet shown after
    `end` once `end`'s keyframe has passed."""
    if start is not None:
        with contextlib.suppress(av.error.FFmpegError):
            inp.seek(start, stream=vin, backward=True, any_frame=False)
    found = start is None
    past_end = False
    for packet in inp.demux(vin):
        if not packet.size:
            continue
        if not found:
            if packet.pts is not None and packet.pts > start and packet.is_keyframe:
                break  # the seek landed past the keyframe: read from the top instead
            found = packet.is_keyframe and packet.pts == start
            if not found:
                continue
        if end is not None and packet.pts is not None and packet.pts >= end:
            if past_end and not packet.is_keyframe:
                return
            if packet.is_keyframe:
                if past_end:
                    return
                past_end = True
        yield packet
    if found:
        return
    inp.seek(0, stream=vin, backward=True, any_frame=True)
    for packet in inp.demux(vin):
        if packet.size and packet.is_keyframe and packet.pts == start:
            yield packet
            yield from _segment_packets(inp, vin, source, None, end)
            return
    raise VideoError(f"{source}: no keyframe at {_seconds(start, vin.time_base)} any more")


def _encode_segment(
    inp: Any,
    vin: Any,
    packets: Iterator[Any],
    start: int | None,
    end: int | None,
    frame_fn: Callable[[int, int], FrameFn],
    options: VideoOptions,
    muxer: str,
) -> Segment:
    state = _Clip()
    decoder = vin.codec_context

    def frames() -> Iterator[Any]:
        for packet in packets:
            try:
                yield from decoder.decode(packet)
            except av.error.FFmpegError as exc:
                where = _seconds(packet.pts, vin.time_base)
                _damaged(state, options.strict, f"a video packet at {where}", exc)
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            yield from decoder.decode(None)

    kept = (
        f
        for f in frames()
        if f.pts is None or ((start is None or f.pts >= start) and (end is None or f.pts < end))
    )
    first = next(kept, None)
    if first is None:
        return Segment(start, (), None, 0, 0, 0, tuple(state.notes))
    # The encoder exactly as `restore_video` sets it up for this container; its packets
    # are kept, not written: the driver joins the segments into the output.
    out = av.open(io.BytesIO(), "w", format=muxer)
    try:
        vout, conv = _add_video(vin, first, out, options)
        restore = frame_fn(conv.width, conv.height)
        encoded: list[tuple[bytes, int | None, int | None, int | None, bool]] = []

        def keep(batch: list[Any]) -> None:
            encoded.extend((bytes(p), p.pts, p.dts, p.duration, bool(p.is_keyframe)) for p in batch)

        count = 0
        for frame in itertools.chain([first], kept):
            pts = frame.pts
            out_frame = conv.to_frame(restore(conv.to_rgb(frame)))
            out_frame.pts, out_frame.time_base = pts, vin.time_base
            keep(vout.encode(out_frame))
            count += 1
        keep(vout.encode(None))
        extradata = vout.codec_context.extradata
    except av.error.FFmpegError as exc:
        raise _as_error(exc) from None
    finally:
        with contextlib.suppress(Exception):
            out.close()
    return Segment(
        start,
        tuple(encoded),
        None if extradata is None else bytes(extradata),
        count,
        conv.width,
        conv.height,
        tuple(state.notes),
    )


def join_segments(
    source: Path,
    target: Path,
    segments: Iterable[Segment],
    *,
    options: VideoOptions,
    overwrite: bool,
) -> ClipReport:
    """Write `target` from `source`'s restored segments, in order (read one at a time):
    their video packets as they are (no re-encode: a lossless join), the other streams'
    packets copied from `source` as `restore_video` copies them, interleaved by time,
    through a temporary file renamed when complete (see `restore_video` for errors)."""
    muxer = MUXERS.get(target.suffix.lower())
    if muxer is None:
        raise UsageError(f"{target}: cannot write {target.suffix} video; use .mp4, .mkv or .mov")
    probe = _open_input(source)
    try:
        first = next(probe.decode(_video_stream(probe, source)), None)
    except av.error.FFmpegError:
        first = None
    finally:
        probe.close()
    if first is None:
        raise VideoError(f"{source}: no video frame could be decoded")
    inp = _open_input(source)
    try:
        vin = _video_stream(inp, source)
        others = [s for s in inp.streams if s.index != vin.index and s.type != "attachment"]
        return _write_joined(inp, vin, others, first, target, muxer, segments, options, overwrite)
    finally:
        inp.close()


def _write_joined(
    inp: Any,
    vin: Any,
    others: list[Any],
    first: Any,
    target: Path,
    muxer: str,
    segments: Iterable[Segment],
    options: VideoOptions,
    overwrite: bool,
) -> ClipReport:
    try:
        tmp, fd = create_temp(target.parent, target.name)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write here ({_ffmpeg_reason(exc)})") from None
    os.close(fd)
    notes: list[str] = []
    counted = {"frames": 0}
    try:
        out = av.open(str(tmp), "w", format=muxer)
        try:
            out.metadata.update({k: v for k, v in inp.metadata.items() if k != "encoder"})
            copies = _add_copies(inp, others, out, notes)
            vout, conv = _add_video(vin, first, out, options)
            out.start_encoding()  # opens the encoder, as each segment's was: its header
            header = vout.codec_context.extradata
            header = None if header is None else bytes(header)

            def video() -> Iterator[tuple[float, Any]]:
                last: int | None = None
                for seg in segments:
                    if seg.packets and seg.extradata != header:
                        raise VideoError(
                            "the segments were encoded with other codec settings than the "
                            "output's (different encoder versions on the Ray nodes?); "
                            "restore this clip with --engine local"
                        )
                    counted["frames"] += seg.frames
                    notes.extend(seg.notes)
                    for data, pts, dts, duration, key in seg.packets:
                        if dts is not None and last is not None and dts <= last:
                            raise VideoError(
                                f"segment at {_seconds(seg.start, vin.time_base)} overlaps the "
                                "one before it in decoding time; restore this clip with "
                                "--engine local"
                            )
                        last = dts if dts is not None else last
                        packet = av.Packet(data)
                        packet.pts, packet.dts, packet.time_base = pts, dts, vin.time_base
                        if duration is not None:
                            packet.duration = duration
                        packet.is_keyframe = key
                        packet.stream = vout
                        yield _when(dts if dts is not None else pts, vin.time_base), packet

            def copied() -> Iterator[tuple[float, Any]]:
                if not copies:
                    return
                streams = [s for s in others if s.index in copies]
                try:
                    for packet in inp.demux(*streams):
                        if packet.size:
                            when = packet.dts if packet.dts is not None else packet.pts
                            yield _when(when, packet.time_base), packet
                except (av.error.FFmpegError, OSError) as exc:
                    notes.append(f"copying the other streams stopped ({_ffmpeg_reason(exc)})")

            for _, packet in heapq.merge(video(), copied(), key=lambda item: item[0]):
                copy = copies.get(packet.stream.index) if packet.stream is not vout else vout
                if copy is not vout:
                    packet.stream = copy
                out.mux(packet)
        except BaseException:
            with contextlib.suppress(Exception):
                out.close()
            raise
        try:
            out.close()
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"{target}: cannot finish writing ({_ffmpeg_reason(exc)})") from None
        commit_temp(tmp, target, overwrite=overwrite)
    except av.error.FFmpegError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _as_error(exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return ClipReport(
        frames=counted["frames"],
        width=conv.width,
        height=conv.height,
        codec=vout.codec_context.name,
        notes=tuple(notes),
    )


def _when(ts: int | None, time_base: Fraction | None) -> float:
    """A packet's time in seconds for interleaving (unknown: at once)."""
    if ts is None or time_base is None:
        return float("-inf")
    return float(ts * time_base)
