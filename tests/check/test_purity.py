"""Guards that keep the checkers pure: no I/O, clocks, asyncio or global randomness.

A verdict must replay from a recorded history, so ``tidekv.check`` only computes. The
check reads the source with :mod:`ast`, as tests/versioning/test_purity.py does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tidekv.check as check
from purity import Rules, violations

PACKAGE = Path(check.__file__).parent
MODULES = sorted(p.name for p in PACKAGE.glob("*.py"))

RULES = Rules(
    imports=frozenset(
        {
            "__future__",
            "collections",
            "collections.abc",
            "dataclasses",
            "enum",
            "math",
            "typing",
        }
    ),
    prefixes=("tidekv.check.",),
    random="none",
)


def test_the_package_has_the_modules_we_guard() -> None:
    assert {"linearizability.py", "versioned.py"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_is_pure(name: str) -> None:
    source = (PACKAGE / name).read_text(encoding="utf-8")
    assert violations(source, RULES) == []
    assert ast.get_docstring(ast.parse(source)), "module docstring"


@pytest.mark.parametrize(
    "snippet",
    ["import time", "import os", "import random", "from asyncio import sleep", "x = open('f')"],
)
def test_the_guard_catches_impurity(snippet: str) -> None:
    assert violations(snippet, RULES)
