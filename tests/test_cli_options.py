"""The CLI's typed options (mprnet_cli.cli.options) and the rules they share with the library."""

from __future__ import annotations

import pickle
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from mprnet_cli.api import Restorer
from mprnet_cli.backends.torch import speed_limits
from mprnet_cli.choices import (
    BackendChoice,
    Ensemble,
    ModelChoice,
    OutputFormat,
    Precision,
    SplitLines,
)
from mprnet_cli.cli import app
from mprnet_cli.cli.options import SETTINGS_OPTIONS, parse_tile
from mprnet_cli.errors import UsageError
from mprnet_cli.inference.pipeline import TileOptions
from mprnet_cli.inference.tiling import plan_tiles, valid_tile
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task

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
    tile_for_speed=False,
    format=OutputFormat.WEBP,
    jpeg_quality=80,
    max_pixels=1000,
    video_quality=30,
    video_codec="hevc",
    video_strict=True,
    video_deflicker=0.5,
)


def test_changed_sets_every_field_away_from_its_default() -> None:
    for f in fields(RestoreSettings):
        assert getattr(CHANGED, f.name) != f.default, f.name


def test_every_setting_but_the_evaluation_switch_is_a_command_line_option() -> None:
    # --hide-split-lines is the alias of --split-lines hide, not a field of its own.
    options = set(SETTINGS_OPTIONS) - {"hide_split_lines"}
    assert options == {f.name for f in fields(RestoreSettings)} - {"tile_for_speed"}


def test_the_restore_command_passes_every_option_into_one_settings_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[RestoreSettings] = []
    monkeypatch.setattr(
        "mprnet_cli.cli.restore._restore",
        lambda task, inputs, batch, settings, *a: seen.append(settings),
    )
    args = [
        "derain", "x.png", "-w", "w.safetensors", "-m", "published", "-d", "cpu",
        "--precision", "bf16", "--backend", "torch", "-t", "64", "--tile-overlap", "16",
        "--tile-batch", "3", "--compile", "--strength", "0.5", "--ensemble", "8",
        "--hide-split-lines", "--threads", "2", "--format", "webp", "--jpeg-quality", "80",
        "--max-pixels", "1000", "--video-quality", "30", "--video-codec", "hevc",
        "--video-strict", "--video-deflicker", "0.5",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == [replace(CHANGED, tile_for_speed=True)]
    seen.clear()
    monkeypatch.delenv("MPRNET_PRECISION", raising=False)  # conftest pins them
    monkeypatch.delenv("MPRNET_BACKEND", raising=False)
    assert CliRunner().invoke(app, ["derain", "x.png"]).exit_code == 0
    assert seen == [RestoreSettings()]  # the command line's defaults are the settings' own


def test_the_restorer_keeps_its_settings_through_a_pickle(tiny_checkpoint: Path) -> None:
    wanted = RestoreSettings(
        weights=tiny_checkpoint, device="cpu", backend="torch", tile=16, strength=0.5
    )
    by_keywords = Restorer(
        weights=tiny_checkpoint, device="cpu", backend="torch", tile=16, strength=0.5
    )
    by_value = Restorer(None, tiny_checkpoint, replace(wanted, weights=None))
    for restorer in (by_keywords, by_value, pickle.loads(pickle.dumps(by_keywords))):
        assert restorer.settings == wanted
    with pytest.raises(TypeError, match="colour"):
        Restorer(weights=tiny_checkpoint, colour=True)


def test_the_ray_actors_get_the_settings_unchanged(tiny_checkpoint: Path) -> None:
    pytest.importorskip("ray", reason="needs the ray extra: pip install 'mprnet-cli[ray]'")
    from mprnet_cli.runners.ray import default_restorer

    shipped = replace(CHANGED, compile=False, device="cpu", precision="fp32", model="auto")
    restorer = default_restorer(Task.DENOISE, shipped, tiny_checkpoint)
    assert restorer.settings == replace(shipped, weights=tiny_checkpoint)
    assert restorer.task is Task.DENOISE


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tile": 16, "tile_overlap": 16}, "smaller than --tile 16"),
        ({"tile": 12}, "multiple of 8"),
        ({"strength": 2}, "--strength"),
        ({"ensemble": 3}, "--ensemble"),
        ({"precision": "fp64"}, "--precision"),
        ({"device": "tpu"}, "unknown device"),
        ({"jpeg_quality": 0}, "--jpeg-quality"),
        ({"tile_batch": 0}, "--tile-batch"),
        ({"format": "gif"}, "--format"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_option(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        RestoreSettings(**changes)


def test_an_explicit_overlap_must_fit_the_tile_but_the_default_adapts() -> None:
    assert RestoreSettings(tile=16).overlap == 32  # the default is the pipeline's to shrink
    assert RestoreSettings(max_pixels=0).max_pixels is None  # 0: no limit
    assert RestoreSettings(ensemble=2, weights="w.pth") == RestoreSettings(
        ensemble=Ensemble.MIRROR, weights=Path("w.pth")
    )


def test_an_overlap_too_big_for_auto_tiles_is_refused() -> None:
    """It was clamped silently to nearly the whole 512-px tile: 1,369 tiles instead of 4."""
    with pytest.raises(UsageError, match="--tile-overlap 600 is too big for --tile auto"):
        RestoreSettings(tile=None, tile_overlap=600)
    assert RestoreSettings(tile=None, tile_overlap=128).overlap == 128
    assert RestoreSettings(tile=1024, tile_overlap=600).overlap == 600  # a tile that holds it


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
    from mprnet_cli.settings import settings_of

    assert split_lines_choice(None) is SplitLines.FIX  # issue 21: the default
    assert split_lines_choice("fix") is SplitLines.FIX
    assert split_lines_choice("keep") is SplitLines.KEEP
    assert split_lines_choice(None, hide=True) is SplitLines.HIDE
    assert split_lines_choice("hide", hide=True) is SplitLines.HIDE
    with pytest.raises(UsageError, match="contradicts --split-lines keep"):
        split_lines_choice("keep", hide=True)
    with pytest.raises(UsageError, match="keep, fix or hide"):
        split_lines_choice("off")
    # The settings object takes the alias too (Restorer and restore_dataset pass it on).
    assert settings_of(hide_split_lines=True).split_lines is SplitLines.HIDE
    assert settings_of(split_lines=None).split_lines is SplitLines.FIX  # the default
    with pytest.raises(UsageError, match="contradicts"):
        settings_of(split_lines="keep", hide_split_lines=True)
