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
from purity import Rules, violations

PACKAGE = Path(chaos.__file__).parent
PURE = ["schedule.py", "history.py", "verify.py", "report.py"]

RULES = Rules(
    imports=frozenset(
        {
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
    ),
    prefixes=(
        "tidekv.chaos.schedule",
        "tidekv.chaos.history",
        "tidekv.chaos.report",
        "tidekv.chaos.verify",
    ),
    random="seeded",  # random.Random(seed) only
)


@pytest.mark.parametrize("name", PURE)
def test_module_is_pure(name: str) -> None:
    source = (PACKAGE / name).read_text(encoding="utf-8")
    assert violations(source, RULES) == []
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
    assert violations(snippet, RULES)
