"""The package's size limits (issue 14): no module over 400 lines, no function over 50 lines
outside the phantom's geometry builder. Counted from the source with ast, so a long function
added later fails here rather than in review."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dosediff"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# The anatomy builder is one list of organ shapes; splitting it would scatter the geometry.
EXEMPT = {("phantom/anatomy.py", "build_anatomy")}


def _sources() -> list[tuple[str, str]]:
    return [(p.relative_to(PACKAGE).as_posix(), p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_module_over_limit() -> None:
    long = {name: src.count("\n") for name, src in _sources() if src.count("\n") > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_limit() -> None:
    long = {}
    for name, src in _sources():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and (name, node.name) not in EXEMPT:
                    long[f"{name}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_every_module_is_in_the_map() -> None:
    """docs/architecture.md lists every module, so the map cannot fall behind the code."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    modules = [name for name, _ in _sources() if not name.endswith(("__init__.py", "__main__.py"))]
    missing = [m for m in modules if f"`{m}`" not in doc and f"`{m.rsplit('/', 1)[-1]}`" not in doc]
    assert not missing, f"modules missing from docs/architecture.md: {missing}"
