"""Guards that keep the chaos harness's pure parts pure: schedule, history, verify, report.

These compute from what the runner collected; they must not do I/O, read clocks, or use
the global random source (the schedule's choices come from ``random.Random(seed)``).
The check reads the source with :mod:`ast`, as tests/versioning/test_purity.py does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tidekv.chaos as chaos

PACKAGE = Path(chaos.__file__).parent
PURE = ["schedule.py", "history.py", "verify.py", "report.py"]

ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "hashlib",
    "itertools",
    "math",
    "random",  # only random.Random(seed): module-level functions are banned below
    "typing",
    "tidekv.check.linearizability",
    "tidekv.check.versioned",
}
ALLOWED_PREFIXES = (
    "tidekv.chaos.schedule",
    "tidekv.chaos.history",
    "tidekv.chaos.report",
    "tidekv.chaos.verify",
)
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
            if node.module == "random":
                out.append(f"line {line}: from random import ... (use random.Random(seed))")
        for name in names:
            if name not in ALLOWED_IMPORTS and not name.startswith(ALLOWED_PREFIXES):
                out.append(f"line {line}: imports {name}, not on the allow-list")
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in BANNED_CALLS:
                out.append(f"line {line}: calls {func}()")
            if func.startswith("random.") and func != "random.Random":
                out.append(f"line {line}: calls {func}() (the global random source)")
            if func == "random.Random" and not node.args:
                out.append(f"line {line}: random.Random() without a seed")
    return out


@pytest.mark.parametrize("name", PURE)
def test_module_is_pure(name: str) -> None:
    source = (PACKAGE / name).read_text(encoding="utf-8")
    assert violations(source) == []
    assert ast.get_docstring(ast.parse(source)), "module docstring"


@pytest.mark.parametrize(
    "snippet",
    [
        "import time",
        "import os",
        "import subprocess",
        "from asyncio import sleep",
        "import httpx",
        "import random\nx = random.random()",
        "import random\nr = random.Random()",
        "from random import choice",
        "x = open('f')",
    ],
)
def test_the_guard_catches_impurity(snippet: str) -> None:
    assert violations(snippet)
