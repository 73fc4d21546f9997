"""scripts/check_imports.py: the import-graph check CI runs finds what it claims to."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_imports", ROOT / "scripts" / "check_imports.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check() -> ModuleType:
    return _script()


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "mprnet_cli" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_finds_a_cycle_through_a_function_level_import(check: ModuleType, tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from mprnet_cli import b\n",
            "b.py": "def f():\n    from mprnet_cli.a import x\n",
        },
    )
    found = check.cycles(check.scan(root))
    assert found == [["mprnet_cli.a", "mprnet_cli.b"]]
    assert check.main(["--root", str(root)]) == 1


def test_a_cycle_through_a_package_init(check: ModuleType, tmp_path: Path) -> None:
    # Importing runners.x runs runners/__init__, which imports locations: a real cycle.
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "locations.py": "from mprnet_cli.runners.x import HINT\n",
            "runners/__init__.py": "from mprnet_cli import locations\n",
            "runners/x.py": "HINT = 1\n",
        },
    )
    assert check.cycles(check.scan(root)) == [["mprnet_cli.locations", "mprnet_cli.runners"]]


def test_type_checking_imports_and_own_parents_are_no_cycle(
    check: ModuleType, tmp_path: Path
) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "from mprnet_cli.jobs import planner\n",
            "jobs/__init__.py": "from mprnet_cli.jobs.planner import Planner\n",
            "jobs/planner.py": (
                "from typing import TYPE_CHECKING\n"
                "from mprnet_cli.jobs.records import Result\n"
                "if TYPE_CHECKING:\n    from mprnet_cli import api\n"
            ),
            "jobs/records.py": "Result = 1\n",
            "api.py": "from mprnet_cli.jobs import planner\n",
        },
    )
    assert check.cycles(check.scan(root)) == []
    assert check.main(["--root", str(root), "--max-flat", "1"]) == 0


def test_private_names_and_flat_modules(check: ModuleType, tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "one.py": "from mprnet_cli.jobs.inputs import _key\n",
            "two.py": "",
            "jobs/__init__.py": "",
            "jobs/inputs.py": "_key = 1\n",
            "jobs/planner.py": "from mprnet_cli.jobs.inputs import _key\n",
        },
    )
    modules = check.scan(root)
    assert check.private_crossings(modules) == [
        "mprnet_cli.one imports mprnet_cli.jobs.inputs._key"
    ]
    assert len(check.private_crossings(modules, within=True)) == 2
    assert check.main(["--root", str(root), "--private"]) == 1
    assert check.main(["--root", str(root), "--max-flat", "1"]) == 1
    assert check.main(["--root", str(root), "--max-flat", "2"]) == 0


def test_the_real_tree_has_no_import_cycle(check: ModuleType) -> None:
    # What CI runs (.ci/run): a cycle among mprnet_cli's modules fails the build.
    modules = check.scan(ROOT)
    assert "mprnet_cli.backends.openvino" in modules  # it read the real package
    assert check.cycles(modules) == []


def test_the_script_exits_0_on_the_real_tree() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_imports.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "import cycles: 0" in done.stdout
