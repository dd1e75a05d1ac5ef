"""Fixtures shared by the tests over real node processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .proc_cluster import ProcCluster


def _trio(tmp_path: Path, shards: int | None) -> Iterator[ProcCluster]:
    c = ProcCluster(tmp_path, 3, shards=shards)
    c.start_all()
    try:
        for i in (1, 2, 3):
            c.wait_ready(i)
        yield c
    finally:
        c.close()


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[ProcCluster]:
    """Three ``tide serve`` processes on loopback with the nodes' default shard count,
    each serving (a leader needs only two of them: a test must not race the third's
    start), all stopped at teardown."""
    yield from _trio(tmp_path, None)


@pytest.fixture
def unsharded_trio(tmp_path: Path) -> Iterator[ProcCluster]:
    """:func:`trio` with ``--shards 1``, for what only an unsharded cluster has: one data
    group whose Raft ids are the node ids, membership by ``POST /v1/cluster/nodes``, its
    ``/v1/cluster`` shape (one shard, the leader's progress, voter/leader states)."""
    yield from _trio(tmp_path, 1)
