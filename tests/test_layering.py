"""DESIGN.md §2: the four packages' import rules, read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("videopainter", "catalog", "tasks", "flows")
FORBIDDEN = {
    "videopainter": {"prefect", "duckdb", "catalog", "tasks", "flows"},
    "catalog": {"torch", "torchvision", "diffusers", "prefect", "videopainter", "tasks", "flows"},
    "flows": {"torch", "torchvision"},
    "tasks": {"flows"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_package_respects_import_rules(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package]) for path in _modules(package)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ imports what DESIGN.md §2 forbids: {offenders}"


def test_no_import_cycles_between_packages() -> None:
    graph = {p: set() for p in PACKAGES}
    for package in PACKAGES:
        for path in _modules(package):
            graph[package] |= _imports(path) & (set(PACKAGES) - {package})

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cycles = [p for p in PACKAGES if reaches(p, p, {p})]
    assert not cycles, f"import cycle through {cycles}: {graph}"


def test_rules_detect_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom prefect import flow\n")
    assert _imports(bad) & FORBIDDEN["catalog"] == {"torch", "prefect"}
