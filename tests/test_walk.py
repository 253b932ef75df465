"""The walk of one clip from ``vpf run`` to its ``pairs`` row, as docs/architecture.md lists it: at most twelve files,
each of them real, none visited twice, and no function on them taking more than eight parameters or ``**kwargs``."""

from __future__ import annotations

import ast
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
MAX_FILES = 12
MAX_PARAMETERS = 8


def walk() -> list[str]:
    """The files of section 4 of docs/architecture.md, in order (its numbered list)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## 4.", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `([^`]+\.py)`", section, flags=re.M)


def test_the_walk_is_short_real_and_visits_each_file_once() -> None:
    files = walk()
    assert 8 <= len(files) <= MAX_FILES, files
    assert len(set(files)) == len(files), files
    missing = [f for f in files if not (ROOT / f).is_file()]
    assert not missing, missing


def _forwards_to_super(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """An override that keeps a library method's signature and hands ``**kwargs`` on to it unchanged
    (``super().with_options(**kwargs)``): no option is plumbed through our code."""
    for call in ast.walk(node):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == node.name
            and isinstance(call.func.value, ast.Call)
            and isinstance(call.func.value.func, ast.Name)
            and call.func.value.func.id == "super"
            and any(
                k.arg is None and isinstance(k.value, ast.Name) and k.value.id == node.args.kwarg.arg
                for k in call.keywords
            )
        ):
            return True
    return False


def test_no_function_on_the_walk_takes_more_than_eight_parameters_or_kwargs() -> None:
    offenders = []
    for name in walk():
        tree = ast.parse((ROOT / name).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            count = len([a for a in named if a.arg not in ("self", "cls")])
            if count > MAX_PARAMETERS or (args.kwarg is not None and not _forwards_to_super(node)):
                offenders.append(f"{name}:{node.lineno} {node.name} ({count} parameters, **kwargs={bool(args.kwarg)})")
    assert not offenders, offenders
