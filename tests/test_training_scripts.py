"""scripts/train_bundled.py and scripts/compare_weights.py, smoke-tested on the CPU with a
tiny budget: the GPU run (issue 21) must not be the first time they execute."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from mprnet_cli.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _photos(folder: Path, n: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        ys, xs = np.mgrid[0:size, 0:size]
        base = 0.5 + 0.3 * np.sin(xs / (5 + k) + ys / 7.0)
        rgb = np.clip(base[..., None] + 0.1 * rng.random((size, size, 3)), 0, 1)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"p{k}.png")
    return folder


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.timeout(600)  # four interpreters start torch; about a minute on 2 idle cores
def test_train_then_compare_on_a_tiny_budget(tmp_path: Path) -> None:
    data = _photos(tmp_path / "train", 2, 48)
    held = _photos(tmp_path / "samples", 1, 40)
    out = tmp_path / "runs"
    train = _run(
        ROOT / "scripts" / "train_bundled.py", "--data", data, "--out", out,
        "--device", "cpu", "--steps", "2", "--minutes", "1", "--batch", "1", "--crop", "16",
        "--save-every", "1", "--width", "8,4,4", "--num-cab", "1",
    )  # fmt: skip
    assert train.returncode == 0, train.stdout + train.stderr
    for task in ("derain", "deblur", "denoise"):
        assert (out / f"{task}.safetensors").is_file()
        assert (out / f"run-{task}" / "last.pt").is_file()  # checkpoints as it goes
        assert f"{task}: exit 0" in train.stdout
    registry = (ROOT / "weights" / "registry.json").read_bytes()
    compare = _run(
        ROOT / "scripts" / "compare_weights.py", out, "--images", held, "--crop-px", "32"
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr
    # A 2-step 8-wide network does not beat the bundled ones: the rule keeps them all.
    assert compare.stdout.count("-> keep the bundled") == 3, compare.stdout
    assert compare.stdout.count("p0@") == 3 * 3  # three crops per task, one table row each
    assert (ROOT / "weights" / "registry.json").read_bytes() == registry


def test_train_without_photos_says_how_to_get_them(tmp_path: Path) -> None:
    run = _run(ROOT / "scripts" / "train_bundled.py", "--data", tmp_path / "none")
    assert run.returncode == 2 and "fetch_training_data.py" in run.stderr


def _compare_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_weights", SCRIPTS / "compare_weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replace_rule_needs_the_mean_gain_and_no_big_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule itself, on the bundled denoiser against itself: gain 0."""
    cw = _compare_module()
    images = cw.crops(_photos(tmp_path / "samples", 1, 32), 32)
    entry = json.loads((ROOT / "weights" / "registry.json").read_text())["bundled"]["denoise"]
    same = ROOT / "weights" / entry["file"]
    assert not cw.compare(Task.DENOISE, same, same, images, 0.3, 0.5)
    assert "+0.00  worst +0.00" in capsys.readouterr().out
    assert cw.compare(Task.DENOISE, same, same, images, 0.0, 0.5)  # no gain asked: replace
