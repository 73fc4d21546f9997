"""The restoration tasks, each declared once as a `TaskSpec`.

Everything that differs between tasks is a field of its spec: the output-name suffix, the
help phrase, the channel `mprnet eval` measures, the training degradation and the key of
its networks in `weights/registry.json`. The CLI, evaluation, training and the weights
registry read the spec, so a new task is its `Task` member, its `TASKS` entry, its
registry.json entry and its degradation in `degradations/synthesis.py`.
Light on purpose (no torch, numpy or Pillow): `mprnet --help` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from mprnet_cli.choices import spoken_list


class Task(str, Enum):
    """A restoration task; the value is the CLI sub-command."""

    DERAIN = "derain"
    DEBLUR = "deblur"
    DENOISE = "denoise"

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self]

    @property
    def past_tense(self) -> str:
        """`derain` -> `derained`, used for default output names."""
        return self.spec.past_tense

    @property
    def summary(self) -> str:
        return self.spec.summary


class EvalChannel(str, Enum):
    """What `mprnet eval` compares: luma only, or all three colour channels."""

    Y = "y"
    RGB = "rgb"


@dataclass(frozen=True)
class TaskSpec:
    """Every fact about one task that code outside its implementation needs.

    `past_tense`: the default output suffix (`photo_derained.png`). `summary`: the
    command's one-line help. `removes`: what it removes, for help that lists all tasks.
    `eval_channel`: the paper's protocol for the task. `degradation`: the name of its
    synthetic training degradation in `degradations.synthesis.DEGRADATIONS`.
    `registry_key`: its entries under "published" and "bundled" in weights/registry.json.
    """

    past_tense: str
    summary: str
    removes: str
    eval_channel: EvalChannel
    degradation: str
    registry_key: str


TASKS: Final[dict[Task, TaskSpec]] = {
    Task.DERAIN: TaskSpec(
        past_tense="derained",
        summary="Remove rain streaks.",
        removes="rain",
        eval_channel=EvalChannel.Y,  # the paper measures deraining on luma
        degradation="rain",
        registry_key="derain",
    ),
    Task.DEBLUR: TaskSpec(
        past_tense="deblurred",
        summary="Remove motion blur.",
        removes="motion blur",
        eval_channel=EvalChannel.RGB,
        degradation="motion_blur",
        registry_key="deblur",
    ),
    Task.DENOISE: TaskSpec(
        past_tense="denoised",
        summary="Remove sensor noise.",
        removes="noise",
        eval_channel=EvalChannel.RGB,
        degradation="sensor_noise",
        registry_key="denoise",
    ),
}


def task_names(last: str = "or") -> str:
    """What TASK takes, for help and errors: "derain, deblur or denoise"."""
    return spoken_list([t.value for t in Task], last)


def what_tasks_remove() -> str:
    """What the tasks remove, for the tool's one-line description: "rain, motion blur and noise"."""
    return spoken_list([t.spec.removes for t in Task], "and")
