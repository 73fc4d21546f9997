"""mprnet_cli.tasks: one `TaskSpec` per task, and every fact of it read from there.

Each test changes one field of one spec and checks that the code reading it follows: a
fact copied back into a reader (a dict keyed by task name, a hard-coded help phrase)
fails here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mprnet_cli import tasks
from mprnet_cli.degradations import synthesis
from mprnet_cli.errors import WeightsError
from mprnet_cli.evaluation.evaluate import y_channel_for
from mprnet_cli.tasks import TASKS, EvalChannel, Task, task_names, what_tasks_remove
from tests.conftest import REPO


def _patch(monkeypatch: pytest.MonkeyPatch, task: Task, **fields: object) -> None:
    monkeypatch.setitem(TASKS, task, dataclasses.replace(TASKS[task], **fields))  # type: ignore[arg-type]


def test_every_task_is_declared_once_with_what_its_readers_need() -> None:
    assert set(TASKS) == set(Task)
    assert all(t.spec is TASKS[t] for t in Task)
    assert {t.spec.registry_key for t in Task} == {t.value for t in Task}  # registry.json
    assert {t.spec.degradation for t in Task} <= set(synthesis.DEGRADATIONS)
    assert [t.past_tense for t in Task] == ["derained", "deblurred", "denoised"]
    assert task_names() == "derain, deblur or denoise"
    assert what_tasks_remove() == "rain, motion blur and noise"


def test_the_eval_channel_is_the_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [y_channel_for(t) for t in Task] == [True, False, False]  # the paper's protocol
    _patch(monkeypatch, Task.DEBLUR, eval_channel=EvalChannel.Y)
    _patch(monkeypatch, Task.DERAIN, eval_channel=EvalChannel.RGB)
    assert [y_channel_for(t) for t in Task] == [False, True, False]


def test_the_training_degradation_is_the_one_the_spec_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(task: Task | str) -> torch.Tensor:
        return synthesis.degrade(task, x, torch.Generator().manual_seed(1))

    rain = synthesis.random_rain(x, torch.Generator().manual_seed(1))
    assert torch.equal(run(Task.DERAIN), rain) and torch.equal(run("derain"), rain)
    assert not torch.equal(run(Task.DENOISE), rain)
    _patch(monkeypatch, Task.DENOISE, degradation="rain")
    assert torch.equal(run(Task.DENOISE), rain)
    with pytest.raises(ValueError, match="expected derain, deblur or denoise"):
        run("dehaze")


def test_the_registry_reads_each_task_under_its_specs_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mprnet_cli.weights import registry

    data = json.loads((REPO / "weights" / "registry.json").read_text(encoding="utf-8"))
    for section in ("published", "bundled"):
        if "deblur" in data.get(section, {}):
            data[section]["motion"] = data[section].pop("deblur")
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setenv("MPRNET_REGISTRY", str(path))
    with pytest.raises(WeightsError, match="deblur"):  # the key the spec names is missing
        registry()
    _patch(monkeypatch, Task.DEBLUR, registry_key="motion")
    monkeypatch.setenv("MPRNET_REGISTRY", str(path.rename(tmp_path / "again.json")))
    motion = data["published"]["motion"]["sources"][0]["path"]
    assert registry()[Task.DEBLUR].published.sources[0].path == motion


def test_help_and_output_names_come_from_the_specs(tmp_path: Path) -> None:
    """A spec changed before the CLI is imported changes the help (top level, the task's
    command, TASK) and the output name: nothing in the CLI repeats a spec's words."""
    code = (
        "import dataclasses, sys\n"
        "from mprnet_cli import tasks\n"
        "T = tasks.Task.DEBLUR\n"
        "tasks.TASKS[T] = dataclasses.replace(tasks.TASKS[T], summary='Remove camera shake.',"
        " removes='camera shake', past_tense='steadied')\n"
        "from typer.testing import CliRunner\n"
        "from mprnet_cli.cli.app import app\n"
        "r = CliRunner()\n"
        "print(r.invoke(app, ['--help'], terminal_width=200).output)\n"
        "print(r.invoke(app, ['deblur', '--help'], terminal_width=200).output)\n"
        "print(r.invoke(app, ['weights', 'download', '--help'], terminal_width=200).output)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "Remove rain, camera shake and noise from photos" in out
    assert "deblur   Remove camera shake." in out
    assert "<stem>_steadied<ext>" in out
    assert "TASK: derain, deblur or denoise;" in out  # weights download


def test_the_stored_top_level_help_lists_every_task() -> None:
    """`_help.txt` (served by `mprnet --help` without Typer) is generated: run
    scripts/update_help.py after changing a spec's summary."""
    stored = (REPO / "mprnet_cli" / "_help.txt").read_text(encoding="utf-8")
    assert f"Remove {tasks.what_tasks_remove()} from photos" in stored
    for task in Task:
        assert f"  {task.value:<8} {task.summary}" in stored
