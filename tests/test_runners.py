"""Tests for mprnet_cli.runners: the engine choice, without Ray itself (mocked both ways)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from mprnet_cli import runners
from mprnet_cli.errors import UsageError
from tests.helpers import invoke, save_png


def test_engine_ray_without_ray_is_a_one_line_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_png(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    for name in [m for m in sys.modules if m.split(".")[:3] == ["mprnet_cli", "runners", "ray"]]:
        monkeypatch.delitem(sys.modules, name)  # the runner package and its modules
    result = invoke("derain", "a.png", "--engine", "ray", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr == (
        "mprnet: error: --engine ray needs Ray Data, which is not installed; "
        "run: pip install 'mprnet-cli[ray]'\n"
    )
    assert not (tmp_path / "a_derained.png").exists()


def test_load_ray_returns_the_runner_when_ray_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("mprnet_cli.runners.ray")
    monkeypatch.setattr(runners.importlib, "import_module", lambda name: fake)
    assert runners.load_ray() is fake


def test_load_ray_lets_other_import_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    monkeypatch.setattr(runners.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):
        runners.load_ray()
    monkeypatch.setattr(
        runners.importlib,
        "import_module",
        lambda name: (_ for _ in ()).throw(ModuleNotFoundError("x", name="pyarrow.fs")),
    )
    with pytest.raises(UsageError, match="mprnet-cli\\[ray\\]"):
        runners.load_ray()


@pytest.mark.parametrize(
    "option", [["--workers", "2"], ["--gpus-per-worker", "0.5"], ["--ray-address", "auto"]]
)
def test_ray_options_need_engine_ray(tmp_path: Path, option: list[str]) -> None:
    save_png(tmp_path / "a.png")
    result = invoke("derain", "a.png", *option, cwd=tmp_path)
    assert result.exit_code == 2
    assert "needs --engine ray" in result.stderr


def test_the_cli_module_imports_neither_ray_nor_torch() -> None:
    code = "import sys, mprnet_cli.cli; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
