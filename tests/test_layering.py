"""The four packages' import rules (docs/architecture.md), read from the source with ``ast``: forbidden imports per
package, no circle between packages, and no circle between the modules of a package."""

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
    assert not offenders, f"{package}/ imports what docs/architecture.md forbids: {offenders}"


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


# ------------------------------------------------------------------------------------------ circles inside packages
def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules a module imports when it runs: at module level or inside functions, but not
    under ``if TYPE_CHECKING:`` (annotations only). ``from pkg import name`` yields ``pkg.name`` as well as ``pkg``,
    so an imported submodule is an edge."""
    names: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Import edges between the modules of ``package`` under ``root`` (a package's ``__init__`` is the package)."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = _runtime_imports(tree, name, path.name == "__init__.py")
        # importing ``pkg.sub`` runs ``pkg/__init__`` too, but a package's own modules importing their siblings is
        # not an edge back to the package: only exact module names count
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), as the modules in it, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circles_inside_a_package(package: str) -> None:
    graph = _module_graph(ROOT, package)
    circles = _cycles(graph)
    assert not circles, f"import circle(s) inside {package}/: {circles}"


def test_circle_check_finds_a_circle_and_ignores_type_only_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "store.py").write_text("def query():\n    from pkg import views\n")
    (pkg / "views.py").write_text("from pkg.store import query\n")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("from ..sub.a import x\n")
    (pkg / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.leaf import T\n")
    (pkg / "leaf.py").write_text("import pkg.typed\n")
    assert sorted(_cycles(_module_graph(tmp_path, "pkg"))) == [["pkg.store", "pkg.views"], ["pkg.sub.a", "pkg.sub.b"]]
    (pkg / "store.py").write_text("")
    (pkg / "sub" / "b.py").write_text("")
    assert _cycles(_module_graph(tmp_path, "pkg")) == []


def test_no_flow_module_is_named_like_a_package() -> None:
    """Prefect loads a deployment's entrypoint (``flows/build_pairs.py``) as a script with ``flows/`` on the import
    path, so a ``flows/tasks.py`` would stand in for the ``tasks`` package there and break every import of it."""
    clashes = sorted(p.stem for p in (ROOT / "flows").glob("*.py") if p.stem in PACKAGES)
    assert not clashes, f"flows/ modules named like a package: {clashes}"
