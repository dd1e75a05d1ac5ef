"""Guards that keep tidekv.raft pure: no I/O, no clock, no global randomness.

Same method as tests/versioning/test_purity.py: read the source with :mod:`ast`; every
import must be on an allow-list, and no call may reach the file system, the clock or the
module-level random source. ``random`` is allowed only as the type of the injected
generator (``Config.rng``): calling ``random.<anything>()`` is banned.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tidekv.raft as raft
from purity import Rules, violations

PACKAGE = Path(raft.__file__).parent

RULES = Rules(
    imports=frozenset(
        {
            "__future__",
            "collections",
            "collections.abc",
            "dataclasses",
            "enum",
            "msgspec",
            "operator",
            "random",  # the type of the injected generator only (calls are banned)
            "sys",  # sys.maxsize
            "typing",
            "tidekv.errors",
        }
    ),
    prefixes=("tidekv.raft.",),
    random="injected",
)


MODULES = sorted(PACKAGE.glob("*.py"))


def test_found_the_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"raft.py", "rawnode.py", "log.py", "storage.py", "quorum.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(), RULES) == []


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
    assert violations(snippet, RULES)
