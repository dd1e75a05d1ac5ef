"""Fixtures shared by the tests over real node processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .proc_cluster import ProcCluster, running


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[ProcCluster]:
    """Three ``tide serve`` processes on loopback, each serving (a leader needs only two
    of them: a test must not race the third's start), all stopped at teardown."""
    with running(tmp_path, 3) as c:
        yield c
