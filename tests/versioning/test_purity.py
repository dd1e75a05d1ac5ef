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
from purity import Rules, violations

PACKAGE = Path(versioning.__file__).parent

RULES = Rules(
    imports=frozenset(
        {
            "__future__",
            "binascii",  # hexlify: bytes to hex bytes (pure)
            "collections.abc",
            "dataclasses",
            "datetime",  # only arithmetic on given times; datetime.now() is banned
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
    ),
    prefixes=("tidekv.versioning.",),
    random="none",
)


MODULES = sorted(PACKAGE.glob("*.py"))


def test_found_the_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"hlc.py", "version.py", "dag.py", "resolve.py", "diff.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), RULES) == []
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
    assert violations(snippet, RULES)


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
