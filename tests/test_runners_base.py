"""Tests for mprnet_cli.runners.base: the runner seam and its engine registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mprnet_cli.choices import EngineChoice, OutputFormat
from mprnet_cli.inference.pipeline import RunStats
from mprnet_cli.jobs import Callbacks, Result, Status, expand_inputs, plan_outputs
from mprnet_cli.runners import base, local
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task


def test_every_engine_has_a_runner_and_local_is_the_threaded_one() -> None:
    assert set(base._RUNNERS) == set(EngineChoice)
    assert base.get_runner(EngineChoice.LOCAL) is local.run


def test_the_ray_runner_is_found_through_load_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeRay:
        @staticmethod
        def run(request: base.RunRequest) -> Any:
            return iter(())

    monkeypatch.setattr(base, "load_ray", lambda: FakeRay)
    assert base.get_runner(EngineChoice.RAY) is FakeRay.run


def test_the_local_engine_builds_its_restorer_from_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task and the settings reach the Restorer unchanged, once; the output options
    (format, JPEG quality) reach the writer; records are reported as written."""
    built: list[tuple[Any, RestoreSettings]] = []

    class Recorded:
        def __init__(self, task: Any, *, settings: RestoreSettings, **kw: Any) -> None:
            built.append((task, settings))

        def restore_rgb(self, rgb: Any, **kw: Any) -> Any:
            return rgb, RunStats(tiles=1, device="fake", seconds=0.0)

    monkeypatch.setattr("mprnet_cli.api.Restorer", Recorded)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / name)
    exp = expand_inputs([str(tmp_path)], suffix="_x")
    sizes = {}
    for quality in (30, 95):
        settings = RestoreSettings(format=OutputFormat.JPEG, jpeg_quality=quality, threads=1)
        plan = plan_outputs(exp, str(tmp_path / f"q{quality}"), suffix="_x", fmt=settings.format)
        reported: list[Result] = []
        request = base.RunRequest(
            Task.DENOISE,
            exp.jobs,
            plan,
            settings,
            callbacks=Callbacks(finished=reported.append),
        )
        results = list(base.get_runner(EngineChoice.LOCAL)(request))
        assert [r.status for r in results] == [Status.OK, Status.OK]
        assert reported == results
        assert built[-1] == (Task.DENOISE, settings)
        sizes[quality] = (tmp_path / f"q{quality}" / "a_x.jpg").stat().st_size
    assert len(built) == 2  # one restorer per run
    assert sizes[30] < sizes[95]
