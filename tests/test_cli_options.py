"""The CLI's typed options (mprnet_cli.cli.options) and the rules they share with the library."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from mprnet_cli.api import Restorer
from mprnet_cli.backends.torch import speed_limits
from mprnet_cli.choices import BackendChoice, Ensemble, ModelChoice, Precision, SplitLines
from mprnet_cli.cli import app
from mprnet_cli.cli.options import RestoreSettings, parse_tile
from mprnet_cli.errors import UsageError
from mprnet_cli.pipeline import TileOptions
from mprnet_cli.tasks import Task
from mprnet_cli.tiling import plan_tiles, valid_tile

# Every field away from its default, so a field dropped on the way shows up.
CHANGED = RestoreSettings(
    weights=Path("w.safetensors"),
    model=ModelChoice.PUBLISHED,
    device="cpu",
    precision=Precision.BF16,
    backend=BackendChoice.TORCH,
    tile=64,
    tile_overlap=16,
    tile_batch=3,
    compile=True,
    strength=0.5,
    ensemble=Ensemble.DIHEDRAL,
    split_lines=SplitLines.HIDE,
    threads=2,
)


def test_every_network_option_is_a_restorer_argument_of_the_same_name() -> None:
    network = CHANGED.network()
    assert set(network) <= set(inspect.signature(Restorer).parameters)
    assert network == {k: getattr(CHANGED, k) for k in network}  # passed as given
    assert set(network) | {"weights", "model", "threads"} == set(vars(CHANGED))


def test_the_ray_actors_get_every_network_option() -> None:
    pytest.importorskip("ray", reason="needs the ray extra: pip install 'mprnet-cli[ray]'")
    from dataclasses import replace

    actors = replace(CHANGED, compile=False).ray_network(Task.DENOISE)
    assert actors.task is Task.DENOISE and actors.threads == 2
    for name, value in replace(CHANGED, compile=False).network().items():
        assert getattr(actors, name) == value, name
    with pytest.raises(UsageError, match="--compile"):
        CHANGED.ray_network(Task.DENOISE)


def test_an_explicit_overlap_must_fit_the_tile_but_the_default_adapts() -> None:
    with pytest.raises(UsageError, match="smaller than --tile 16"):
        RestoreSettings(tile=16, tile_overlap=16).check()
    RestoreSettings(tile=16).check()  # the default overlap (32) is the pipeline's to shrink
    assert RestoreSettings(tile=16).network()["tile_overlap"] == 32


def _accepts(check: Any) -> bool:
    try:
        check()
    except (typer.BadParameter, UsageError, ValueError):
        return False
    return True


def test_the_cli_the_pipeline_and_the_planner_agree_on_tile_sizes() -> None:
    """One rule: 0 (one pass) or a multiple of 8, at least 8, wherever a tile size enters."""
    expected = {0, *range(8, 81, 8)}
    for tile in range(-16, 81):
        verdicts = (
            valid_tile(tile),
            _accepts(lambda: parse_tile(str(tile))),  # noqa: B023 - called at once
            _accepts(lambda: TileOptions(tile=tile)),  # noqa: B023
            _accepts(lambda: plan_tiles(64, 64, tile, 0)),  # noqa: B023
        )
        assert verdicts == (tile in expected,) * 4, (tile, verdicts)


def test_tiling_for_memory_only_lifts_the_speed_limits(tiny_checkpoint: Path) -> None:
    cpu_limits = speed_limits("cpu")
    assert cpu_limits != (None, None)  # else this test would prove nothing
    fast = Restorer(weights=tiny_checkpoint, device="cpu", backend="torch")
    caps = fast.backend.capabilities
    assert (caps.max_tile, caps.one_pass_side) == cpu_limits
    whole = Restorer(weights=tiny_checkpoint, device="cpu", backend="torch", tile_for_speed=False)
    for restorer in (whole, pickle.loads(pickle.dumps(whole))):  # survives the trip to a worker
        caps = restorer.backend.capabilities
        assert (caps.max_tile, caps.one_pass_side) == (None, None)


def test_eval_restores_whole_images_when_they_fit(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's protocol: scores must not depend on the CPU's speed-minded tiles."""
    built: list[Restorer] = []

    class Recorded(Restorer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr("mprnet_cli.api.Restorer", Recorded)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(photos / "a.png")
    args = ["--weights", str(tiny_checkpoint), "--device", "cpu", "--backend", "torch", "-q"]
    result = CliRunner().invoke(
        app, ["eval", "denoise", "--input", str(photos), "--degrade", "noise:25", *args]
    )
    assert result.exit_code == 0, result.output
    (restorer,) = built
    caps = restorer.backend.capabilities
    assert (caps.max_tile, caps.one_pass_side) == (None, None)


def test_split_lines_choice_default_alias_and_clash() -> None:
    from mprnet_cli.choices import split_lines_choice

    assert split_lines_choice(None) is SplitLines.KEEP
    assert split_lines_choice("fix") is SplitLines.FIX
    assert split_lines_choice("keep") is SplitLines.KEEP
    assert split_lines_choice(None, hide=True) is SplitLines.HIDE
    assert split_lines_choice("hide", hide=True) is SplitLines.HIDE
    with pytest.raises(UsageError, match="contradicts --split-lines keep"):
        split_lines_choice("keep", hide=True)
    with pytest.raises(UsageError, match="keep, fix or hide"):
        split_lines_choice("off")
