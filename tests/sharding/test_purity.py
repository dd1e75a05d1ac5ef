"""Guards that keep tidekv.sharding pure: no I/O, no clock, no global randomness.

Same method as tests/raft/test_purity.py: read the source with :mod:`ast`; every import
must be on an allow-list (``random`` is not on it at all: placement is a pure function of
the member list), and no call may reach the file system, the clock or a random source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tidekv.sharding as sharding

PACKAGE = Path(sharding.__file__).parent

ALLOWED_IMPORTS = {
    "__future__",
    "bisect",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "hashlib",  # BLAKE2b of bytes in memory: the stable key and ring hash
    "msgspec",
    "typing",
}
ALLOWED_PREFIXES = ("tidekv.sharding.",)
ALLOWED_FROM = {"tidekv.sharding"}
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
            ok = name in ALLOWED_IMPORTS or name in ALLOWED_FROM
            if not ok and not name.startswith(ALLOWED_PREFIXES):
                out.append(f"line {line}: imports {name}, not on the allow-list")
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in BANNED_CALLS:
                out.append(f"line {line}: calls {func}()")
            if func.startswith("random.") and func != "random.Random":
                out.append(f"line {line}: calls {func}() (the global random source)")
            if func == "random.Random":
                out.append(f"line {line}: makes its own generator (inject it instead)")
    return out


MODULES = sorted(PACKAGE.glob("*.py"))


def test_found_the_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"keys.py", "ring.py", "movement.py", "leaders.py", "metadata.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import asyncio",
        "import socket",
        "import time",
        "from os import path",
        "import threading",
        "x = random.random()",
        "r = random.Random()",
        "open('f')",
        "import random",
        "import os",
    ],
)
def test_the_guard_catches(snippet: str) -> None:
    assert violations(snippet)
