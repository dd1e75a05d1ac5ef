"""Guards that keep the checkers pure: no I/O, clocks, asyncio or global randomness.

A verdict must replay from a recorded history, so ``tidekv.check`` only computes. The
check reads the source with :mod:`ast`, as tests/versioning/test_purity.py does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tidekv.check as check

PACKAGE = Path(check.__file__).parent
MODULES = sorted(p.name for p in PACKAGE.glob("*.py"))

ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "math",
    "typing",
}
BANNED_CALLS = {"open", "input", "print", "exec", "eval", "compile", "__import__", "breakpoint"}


def violations(source: str) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            if name not in ALLOWED_IMPORTS and not name.startswith("tidekv.check."):
                out.append(f"line {line}: imports {name}, not on the allow-list")
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in BANNED_CALLS:
                out.append(f"line {line}: calls {func}()")
    return out


def test_the_package_has_the_modules_we_guard() -> None:
    assert {"linearizability.py", "versioned.py"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_is_pure(name: str) -> None:
    source = (PACKAGE / name).read_text(encoding="utf-8")
    assert violations(source) == []
    assert ast.get_docstring(ast.parse(source)), "module docstring"


@pytest.mark.parametrize(
    "snippet",
    ["import time", "import os", "import random", "from asyncio import sleep", "x = open('f')"],
)
def test_the_guard_catches_impurity(snippet: str) -> None:
    assert violations(snippet)
