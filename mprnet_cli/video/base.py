"""The parts of a clip's work that need no PyAV: options, errors, the deflicker filter and
the report a clip leaves (`mprnet_cli.video.clip` and the package's top level share them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from mprnet_cli.errors import MprnetError, UsageError
from mprnet_cli.settings import DEFAULT_VIDEO_QUALITY, RestoreSettings

#: CRF-like quality: x264's scale (lower is better; 0 is lossless for H.264/H.265). 18 is
#: x264's "visually lossless" point, so the restored detail survives the re-encode.
DEFAULT_QUALITY: Final = DEFAULT_VIDEO_QUALITY  # one fact: the settings' default
#: Frames waiting between decode and the network, and between the network and encode.
QUEUE_FRAMES: Final = 2
INSTALL_HINT: Final = "pip install 'mprnet-cli[video]'"

FrameFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
#: (frames done, frames expected or None when the container does not say)
FrameProgress = Callable[[int, int | None], None]


class VideoError(MprnetError):
    """A clip that cannot be read or written (no video stream, unknown codec, damage)."""


@dataclass(frozen=True)
class VideoOptions:
    """How clips are written: `quality` CRF-like, `codec` None for the input's own."""

    quality: int = DEFAULT_QUALITY
    codec: str | None = None
    strict: bool = False  # a damaged packet fails the clip instead of being skipped
    deflicker: float = 0.0  # `Deflicker` strength; 0 off
    queue: int = QUEUE_FRAMES
    #: FFmpeg's threads for the video decoder and encoder; 0 lets FFmpeg choose (about one
    #: per core, each side, beside the network's own: see docs/video.md, Speed)
    codec_threads: int = 0

    @classmethod
    def of(cls, settings: RestoreSettings) -> VideoOptions:
        """The options a run's settings give (`--video-*`)."""
        return cls(
            quality=settings.video_quality,
            codec=settings.video_codec,
            strict=settings.video_strict,
            deflicker=settings.video_deflicker,
        )

    def __post_init__(self) -> None:
        if not 0 <= self.quality <= 63:
            raise UsageError(f"--video-quality must be 0-63 (CRF-like), got {self.quality}")
        if not 0.0 <= self.deflicker < 1.0:
            raise UsageError(f"--video-deflicker must be in [0, 1), got {self.deflicker}")
        if self.queue < 1:
            raise ValueError("queue must be >= 1")
        if self.codec_threads < 0:
            raise ValueError("codec_threads must be >= 0")


#: Deflicker: pixels whose restored value moved more than this since the previous output
#: frame (any channel, 0-1 scale) are motion or a cut and are never blended. Restored
#: static footage changes by ~3-5 code values on average between frames (README: Video),
#: so its largest channel differences reach ~10-15; 24 covers them, while moving edges of
#: any visible contrast exceed it (low-contrast motion is blended partly: faint trails).
DEFLICKER_TOLERANCE: Final = 24 / 255


class Deflicker:
    """Frame-by-frame restoration flickers: each frame's leftovers differ. This pulls each
    restored frame towards the previous output by `strength`, per pixel, only where the
    two already agree within `tolerance` (the weight falls linearly to 0 at it), so a
    static scene is averaged over time (a recursive filter: independent flicker's
    variance shrinks by (1 - s) / (1 + s)) and motion is left alone. Cost: a few
    array operations per frame, no second network pass."""

    def __init__(self, strength: float, tolerance: float = DEFLICKER_TOLERANCE) -> None:
        self.strength = strength
        self.tolerance = tolerance
        self._previous: npt.NDArray[np.float32] | None = None

    def __call__(self, frame: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        previous = self._previous
        if self.strength <= 0 or previous is None or previous.shape != frame.shape:
            self._previous = frame
            return frame
        delta = previous - frame
        size = np.abs(delta)
        change = np.maximum(np.maximum(size[..., 0], size[..., 1]), size[..., 2])
        # weight = strength * clip(1 - change / tolerance, 0, 1), in place
        weight = np.float32(self.strength) - change * np.float32(self.strength / self.tolerance)
        np.maximum(weight, 0.0, out=weight)
        delta *= weight[..., None]
        out: npt.NDArray[np.float32] = frame + delta
        self._previous = out
        return out


@dataclass(frozen=True)
class ClipReport:
    """What happened to one clip (the runner turns it into a `Result`)."""

    frames: int
    width: int
    height: int
    codec: str
    notes: tuple[str, ...] = ()


#: A segment's encoded video packet: (data, pts, dts, duration, keyframe), in the clip's
#: video time base.
EncodedPacket = tuple[bytes, int | None, int | None, int | None, bool]


@dataclass(frozen=True)
class Segment:
    """One keyframe-to-keyframe stretch of a clip, restored and encoded on its own (the
    Ray engine's unit of work), as its packets: the driver joins the segments in order."""

    start: int | None  # the first frame's timestamp (None: the clip's start)
    packets: tuple[EncodedPacket, ...]
    extradata: bytes | None  # the encoder's global header (SPS/PPS): equal in every segment
    frames: int
    width: int
    height: int
    notes: tuple[str, ...] = ()
