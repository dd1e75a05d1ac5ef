"""Replica ids: one Raft id per incarnation of a replica, the node derivable from it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidekv.sharding.replicas import (
    MAX_INCARNATION,
    MAX_SHARDED_NODE_ID,
    incarnation_of,
    node_of,
    replica_id,
)

nodes = st.integers(1, MAX_SHARDED_NODE_ID)
incs = st.integers(0, MAX_INCARNATION)


@given(nodes, incs)
def test_the_node_and_incarnation_come_back(node: int, inc: int) -> None:
    rid = replica_id(node, inc)
    assert (node_of(rid), incarnation_of(rid)) == (node, inc)
    assert 0 < rid < 2**63  # an int64 on the wire


@given(nodes, incs, nodes, incs)
def test_distinct_incarnations_never_share_an_id(a: int, i: int, b: int, j: int) -> None:
    assert (replica_id(a, i) == replica_id(b, j)) == ((a, i) == (b, j))


@pytest.mark.parametrize(
    ("node", "inc"), [(0, 0), (MAX_SHARDED_NODE_ID + 1, 0), (1, -1), (1, MAX_INCARNATION + 1)]
)
def test_out_of_range_is_refused(node: int, inc: int) -> None:
    with pytest.raises(ValueError):
        replica_id(node, inc)
