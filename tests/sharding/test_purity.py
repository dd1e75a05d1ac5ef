"""Guards that keep tidekv.sharding pure: no I/O, no clock, no global randomness.

Same method as tests/raft/test_purity.py: read the source with :mod:`ast`; every import
must be on an allow-list (``random`` is not on it at all: placement is a pure function of
the member list), and no call may reach the file system, the clock or a random source.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tidekv.sharding as sharding
from purity import Rules, violations

PACKAGE = Path(sharding.__file__).parent

RULES = Rules(
    imports=frozenset(
        {
            "__future__",
            "base64",  # the opaque cursors are base64url text of bytes in memory
            "binascii",  # base64's error type
            "bisect",
            "collections",
            "collections.abc",
            "dataclasses",
            "enum",
            "hashlib",  # BLAKE2b of bytes in memory: the stable key and ring hash
            "heapq",  # the merged listing's heap of shard heads
            "msgspec",
            "typing",
        }
    ),
    prefixes=("tidekv.sharding.",),
    random="none",  # placement is a pure function of the member list
)


MODULES = sorted(PACKAGE.glob("*.py"))


def test_found_the_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"keys.py", "ring.py", "movement.py", "leaders.py", "metadata.py", "scatter.py",
            "executor.py", "liveness.py", "balancer.py", "replicas.py"} <= names  # fmt: skip


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
        "import random",
        "import os",
    ],
)
def test_the_guard_catches(snippet: str) -> None:
    assert violations(snippet, RULES)
