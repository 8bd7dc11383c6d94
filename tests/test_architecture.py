"""The layout's import rules (docs/architecture.md), checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "insarslide"
ROOT_MODULES = {"atomic", "config", "runfiles", "settings"}
# subpackage -> the subpackages it may import (the package root's modules are open to all)
ALLOWED = {
    "contract": set(),
    "data": {"contract"},
    "metrics": {"contract", "data"},
    "models": {"contract", "data", "metrics"},
    "reporting": {"metrics"},
    "training": {"contract", "data", "metrics", "models", "reporting"},
    "inference": {"contract", "data", "metrics", "models", "training"},
}


def imported_insarslide_modules(path: Path) -> set[str]:
    """Every ``insarslide.*`` module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("insarslide.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "insarslide":
                found |= {f"insarslide.{alias.name}" for alias in node.names}
            elif node.module.startswith("insarslide."):
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the project imports by absolute name")
    return found


def owner(module: str) -> str:
    """``insarslide.data.splits`` -> ``data``; a root module -> ``root``."""
    part = module.split(".")[1]
    return "root" if part in ROOT_MODULES else part


def test_every_module_belongs_to_a_known_room():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if len(rel.parts) == 1:
            assert rel.stem in ROOT_MODULES | {"__init__"}, f"{rel}: a new root module; put it in a subpackage"
        else:
            assert rel.parts[0] in ALLOWED, f"{rel}: unknown subpackage"


@pytest.mark.parametrize("room", ["root", *ALLOWED])
def test_imports_point_one_way(room):
    allowed = {"root"} | ({room} if room != "root" else set()) | ALLOWED.get(room, set())
    files = [p for p in SRC.rglob("*.py") if owner("insarslide." + ".".join(p.relative_to(SRC).with_suffix("").parts)) == room]
    assert files, room
    for path in files:
        for module in imported_insarslide_modules(path):
            assert owner(module) in allowed, f"{path.relative_to(SRC)} imports {module}: {room} may import {sorted(allowed)}"


def test_the_package_never_imports_data_prep():
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "data_prep" for n in names), f"{path} imports data_prep"


def test_test_modules_share_helpers_through_conftest_and_tests_data_only():
    # A test module imported by another runs its tests' module-level code twice and ties the two files together;
    # shared helpers live in conftest.py or tests/data/ (issue 19).
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0].startswith("test_")]
    assert offenders == []
