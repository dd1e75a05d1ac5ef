"""Guards that keep tidekv.raft pure: no I/O, no clock, no global randomness.

Same method as tests/versioning/test_purity.py: read the source with :mod:`ast`; every
import must be on an allow-list, and no call may reach the file system, the clock or the
module-level random source. ``random`` is allowed only as the type of the injected
generator (``Config.rng``): calling ``random.<anything>()`` is banned.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tidekv.raft as raft

PACKAGE = Path(raft.__file__).parent

ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "msgspec",
    "operator",
    "random",  # the type of the injected generator only (calls are banned below)
    "sys",  # sys.maxsize
    "typing",
    "tidekv.errors",
}
ALLOWED_PREFIXES = ("tidekv.raft.",)
ALLOWED_FROM = {"tidekv.raft"}
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
    assert {"raft.py", "rawnode.py", "log.py", "storage.py", "quorum.py"} <= names


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
    ],
)
def test_the_guard_catches(snippet: str) -> None:
    assert violations(snippet)
