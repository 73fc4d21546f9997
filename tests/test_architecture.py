"""ARCHITECTURE.md stays true: every module or package it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "ARCHITECTURE.md"

# `mprnet_cli/…` paths in backticks, code blocks or tree lines; a trailing `/` is a package.
PATH = re.compile(r"mprnet_cli(?:/[A-Za-z0-9_]+)*(?:\.py|/)?")


def named_paths(text: str) -> set[str]:
    return {m.group(0) for m in PATH.finditer(text)}


def test_every_named_path_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    names = named_paths(text)
    assert len(names) >= 10, "ARCHITECTURE.md should name the packages it draws"
    missing = sorted(n for n in names if not (ROOT / n).exists())
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


def test_every_package_is_on_the_map() -> None:
    # The reverse direction: a new package that the map does not show is drift too.
    text = DOC.read_text(encoding="utf-8")
    packages = sorted(
        p.relative_to(ROOT).as_posix() + "/"
        for p in (ROOT / "mprnet_cli").iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    )
    absent = [p for p in packages if p not in named_paths(text)]
    assert not absent, f"packages missing from ARCHITECTURE.md: {absent}"


def test_the_path_pattern_reads_tree_lines() -> None:
    sample = "mprnet_cli/runners/local.py  the threaded runner\n`mprnet_cli/serve/`"
    assert named_paths(sample) == {"mprnet_cli/runners/local.py", "mprnet_cli/serve/"}
