"""String enums for user choices, free of heavy imports so the CLI can type its options with them."""

from __future__ import annotations

import re
from enum import Enum

from mprnet_cli.errors import UsageError

# Output formats are declared with everything else about them in one table (no Pillow there).
from mprnet_cli.imageio.formats import OutputFormat as OutputFormat


def spoken_list(words: list[str], last: str = "or") -> str:
    """["a", "b", "c"] -> "a, b or c": how help and errors list choices."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"


class Precision(str, Enum):
    """Arithmetic precision of the network's forward pass."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class BackendChoice(str, Enum):
    """Which inference engine runs the network (`mprnet_cli.backends`)."""

    AUTO = "auto"
    TORCH = "torch"
    OPENVINO = "openvino"


class Ensemble(str, Enum):
    """Self-ensemble: how many flips/rotations of the input are restored and averaged."""

    OFF = "1"
    MIRROR = "2"  # the input and its left-right mirror: mirrored photos stay natural photos
    DIHEDRAL = "8"  # all four rotations, each also mirrored

    @property
    def passes(self) -> int:
        return int(self.value)


class SplitLines(str, Enum):
    """What to do about MPRNet's split lines (the centre row/column of every network pass)."""

    KEEP = "keep"  # the network as published: quarters and halves, lines included
    FIX = "fix"  # the same weights on the input uncut (`MPRNet.cut_input`): no lines
    HIDE = "hide"  # three shifted full passes (`splitlines.restore_hiding_split_lines`)


DEFAULT_SPLIT_LINES = SplitLines.FIX
"""Issue 21's bars met by `fix` on the default command: split rows <= 0.6 levels in one
pass and tiled, tile-centre ratio <= 1.15, time <= 1.2x `keep` (it is ~1x: the same
operations); measured in benchmarks/bench_split_lines.py, docs/quality-and-split-lines.md."""


def split_lines_choice(value: SplitLines | str | None, hide: bool = False) -> SplitLines:
    """`--split-lines` with `--hide-split-lines` as its alias for `hide`; a clash is a
    `UsageError` (never a silent pick)."""
    try:
        chosen = None if value is None else SplitLines(value)
    except ValueError:
        raise UsageError(f"--split-lines must be keep, fix or hide, got {value!r}") from None
    if hide:
        if chosen not in (None, SplitLines.HIDE):
            raise UsageError(
                f"--hide-split-lines contradicts --split-lines {chosen.value}: give one of them"
            )
        return SplitLines.HIDE
    return DEFAULT_SPLIT_LINES if chosen is None else chosen


class ModelChoice(str, Enum):
    """Which weights to use when no file is given."""

    AUTO = "auto"
    PUBLISHED = "published"
    BUNDLED = "bundled"


_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_spec(spec: str | None) -> str:
    """`--device`, normalised and checked for syntax only (no torch: the CLI checks it
    before deciding whether any work needs the network); `UsageError` if malformed."""
    text = (spec or "auto").strip().lower()
    if not _DEVICE_RE.fullmatch(text):
        raise UsageError(f"unknown device {text!r}: use auto, cpu, cuda, cuda:N or mps")
    return text


class EngineChoice(str, Enum):
    """Where restore commands run: this machine's threads, or a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"
