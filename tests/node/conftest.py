"""Fixtures shared by the tests over real node processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .proc_cluster import ProcCluster, running


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[ProcCluster]:
    """Three ``tide serve`` processes on loopback with the nodes' default shard count,
    each serving (a leader needs only two of them: a test must not race the third's
    start), all stopped at teardown."""
    with running(tmp_path, 3, shards=None) as c:
        yield c


@pytest.fixture
def unsharded_trio(tmp_path: Path) -> Iterator[ProcCluster]:
    """:func:`trio` with ``--shards 1``, for what only an unsharded cluster has: one data
    group whose Raft ids are the node ids, membership by ``POST /v1/cluster/nodes``, its
    ``/v1/cluster`` shape (one shard, the leader's progress, voter/leader states)."""
    with running(tmp_path, 3, shards=1) as c:
        yield c
