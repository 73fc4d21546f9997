"""Decode -> restore -> encode one clip with PyAV: the only module that imports `av`.

Three threads: this module's decode thread demuxes every kept stream and decodes the video
to float RGB, the caller's thread runs the network, and the encode thread converts back to
the input's pixel format and muxes, copying the other streams' packets untouched in demux
order. Bounded queues between them hold `VideoOptions.queue` items each, so memory does not
grow with the clip's length. See the package docstring for what is kept.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
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
from mprnet_cli.video.base import ClipReport, FrameFn, FrameProgress, VideoError, VideoOptions

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
        note = f"{what} at {_seconds(ts, tb)} could not be decoded ({_ffmpeg_reason(exc)})"
        if strict:
            raise VideoError(f"{note}; drop --video-strict to skip damaged parts") from None
        state.notes.append(f"{note}; skipped")

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
