"""Fixtures shared by the tests over real node processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .proc_cluster import ProcCluster


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[ProcCluster]:
    """Three ``tide serve`` processes on loopback, each serving (a leader needs only two
    of them: a test must not race the third's start), all stopped at teardown."""
    c = ProcCluster(tmp_path, 3)
    c.start_all()
    try:
        for i in (1, 2, 3):
            c.wait_ready(i)
        yield c
    finally:
        c.close()
