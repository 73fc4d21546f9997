"""The restoration tasks and how they are named to users."""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """A restoration task; the value is the CLI sub-command."""

    DERAIN = "derain"
    DEBLUR = "deblur"
    DENOISE = "denoise"

    @property
    def past_tense(self) -> str:
        """`derain` -> `derained`, used for default output names."""
        return {"derain": "derained", "deblur": "deblurred", "denoise": "denoised"}[self.value]

    @property
    def summary(self) -> str:
        return {
            "derain": "Remove rain streaks.",
            "deblur": "Remove motion blur.",
            "denoise": "Remove sensor noise.",
        }[self.value]
