#!/usr/bin/env python3
"""Check the package's import graph: cycles, private names across packages, flat modules.

Why: each fact and each seam should have one home; an import cycle or a private name
borrowed from another package is the first sign that a responsibility leaked. CI runs
this script; it reads source files only (nothing is imported), so it is fast and safe.

Exit status: 0 when every enabled check holds, 1 otherwise. ``--report`` prints the
findings without failing (for planning a clean-up).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "mprnet_cli"


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)
    # (imported module, name) pairs whose name starts with one underscore.
    private: set[tuple[str, str]] = field(default_factory=set)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ``from X import ...`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    is_package = module.path.name == "__init__.py"
    keep = len(base) - node.level + (1 if is_package else 0)
    prefix = base[:keep]
    return ".".join([*prefix, node.module] if node.module else prefix)


def type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``: annotations, never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def scan(root: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name = module_name(root, path)
        modules[name] = Module(name, path)
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        skipped = type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                target = resolve(module, node)
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        module.private.add((target, alias.name))
                    target_of_name = full if full in modules else target
                    module.imports.add(target_of_name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PACKAGE):
                        module.imports.add(alias.name)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are dependencies
        # too, except the importer's own ancestors (already being imported around it),
        # unless the module names one of them explicitly (then it is a real edge).
        own = {".".join(module.name.split(".")[:i]) for i in range(1, module.name.count(".") + 1)}
        implicit = set()
        for target in module.imports:
            parts = target.split(".")
            implicit.update(".".join(parts[:i]) for i in range(1, len(parts)))
        module.imports |= implicit - own
        module.imports &= modules.keys()
        module.imports.discard(module.name)
    return modules


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in modules:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(modules[start].imports)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(modules[child].imports))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def package_of(name: str) -> str:
    """The first-level package a module belongs to (``mprnet_cli.jobs.planner`` ->
    ``mprnet_cli.jobs``); modules directly under the package are their own."""
    parts = name.split(".")
    return ".".join(parts[:2])


def private_crossings(modules: dict[str, Module], *, within: bool = False) -> list[str]:
    """Private names imported from another package (``within``: from another module)."""
    lines = []
    for module in modules.values():
        for target, name in sorted(module.private):
            if not target.startswith(PACKAGE) or target == module.name:
                continue
            if within or package_of(target) != package_of(module.name):
                lines.append(f"{module.name} imports {target}.{name}")
    return lines


def flat_modules(root: Path) -> list[str]:
    """Modules directly under the package, not counting dunder files."""
    return sorted(p.name for p in (root / PACKAGE).glob("*.py") if not p.name.startswith("__"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--report", action="store_true", help="print findings, never fail")
    parser.add_argument(
        "--max-flat", type=int, default=None, help="fail when more modules sit flat"
    )
    parser.add_argument(
        "--private", action="store_true", help="also fail on private names across packages"
    )
    args = parser.parse_args(argv)
    modules = scan(args.root)
    failed = False

    found = cycles(modules)
    print(f"import cycles: {len(found)}")
    for component in found:
        print(f"  cycle of {len(component)}: " + ", ".join(component))
    failed |= bool(found)

    crossings = private_crossings(modules)
    print(f"private names imported across packages: {len(crossings)}")
    for line in crossings:
        print(f"  {line}")
    failed |= bool(args.private and crossings)
    print(f"private names imported across modules: {len(private_crossings(modules, within=True))}")

    flat = flat_modules(args.root)
    print(f"modules directly under {PACKAGE}/: {len(flat)}")
    if args.max_flat is not None and len(flat) > args.max_flat:
        print(f"  more than {args.max_flat}: " + ", ".join(flat))
        failed = True
    return 0 if args.report or not failed else 1


if __name__ == "__main__":
    sys.exit(main())
