"""Guards that keep tidekv.versioning pure (no I/O, clocks, randomness) and its API whole.

The check reads the source with :mod:`ast`: every import must be on an allow-list, and
no call may reach the file system, the system clock, or a random source. Adding an
import here is a conscious decision, made in this file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tidekv.versioning as versioning

PACKAGE = Path(versioning.__file__).parent

ALLOWED_IMPORTS = {
    "__future__",
    "collections.abc",
    "dataclasses",
    "datetime",  # only arithmetic on given times; datetime.now() is banned below
    "difflib",
    "hashlib",
    "heapq",
    "jsonpatch",
    "msgspec",
    "re",
    "struct",
    "typing",
    "tidekv.errors",
}
ALLOWED_PREFIXES = ("tidekv.versioning.",)
BANNED_MODULES = {
    "asyncio",
    "io",
    "os",
    "pathlib",
    "random",
    "secrets",
    "select",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "time",
    "urllib",
    "uuid",
}
BANNED_CALLS = {"open", "input", "print", "exec", "eval", "compile", "__import__", "breakpoint"}
BANNED_ATTRIBUTE_CALLS = {
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "datetime.datetime.now",
    "datetime.datetime.utcnow",
    "datetime.datetime.today",
    "datetime.date.today",
    "datetime.fromtimestamp",
    "datetime.datetime.fromtimestamp",
}


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
            if name.split(".")[0] in BANNED_MODULES:
                out.append(f"line {line}: imports {name} (I/O, clock or randomness)")
            elif name not in ALLOWED_IMPORTS and not name.startswith(ALLOWED_PREFIXES):
                out.append(f"line {line}: imports {name}, not on the allow-list")
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in BANNED_CALLS or func in BANNED_ATTRIBUTE_CALLS:
                out.append(f"line {line}: calls {func}()")
    return out


MODULES = sorted(PACKAGE.glob("*.py"))


def test_found_the_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"hlc.py", "version.py", "dag.py", "resolve.py", "diff.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []
    assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), "module docstring"


@pytest.mark.parametrize(
    "snippet",
    [
        "import time",
        "import os.path",
        "from asyncio import sleep",
        "import socket as s",
        "from random import random",
        "import requests",
        "x = open('f')",
        "import datetime\nx = datetime.datetime.now()",
        "from datetime import datetime\nx = datetime.utcnow()",
    ],
)
def test_the_guard_catches_impurity(snippet: str) -> None:
    assert violations(snippet)


# The names the store and state machine are written against (the integration contract).
CONTRACT = {
    "HLCTimestamp",
    "ZERO",
    "HLC",
    "ClockOffsetTooLarge",
    "JSON_CONTENT_TYPE",
    "BYTES_CONTENT_TYPE",
    "Version",
    "value_digest",
    "compute_version_id",
    "make_version",
    "is_version_id",
    "check_version_id",
    "validate_json",
    "Lookup",
    "add_head",
    "heads_of",
    "ancestors",
    "is_ancestor",
    "common_ancestor",
    "history",
    "order_key",
    "Resolution",
    "Resolver",
    "LastWriteWins",
    "Manual",
    "RESOLVERS",
    "get_resolver",
    "Diff",
    "diff_values",
}


def test_exports() -> None:
    exported = set(versioning.__all__)
    assert exported >= CONTRACT
    assert len(versioning.__all__) == len(exported)
    for name in exported:
        assert hasattr(versioning, name), name
