"""Replica ids: the Raft id of one incarnation of a shard's replica on a node.

A Raft id must never name two incarnations of a replica within one group: the old
incarnation's votes and acknowledgements would count for the new one, which the
multi-group simulator showed breaks Raft (docs/sharding.md, "Raft ids are replica ids").
A data group's Raft ids are therefore replica ids, derived from the node and an
incarnation number::

    replica_id(node, incarnation) = node * 2**16 + incarnation

so the node of any replica id is known without a table (the transport keeps
addressing nodes). Incarnation 0 is the replica placed at cluster creation; a later
re-creation of a replica of the same shard on the same node takes the next number (the
metadata will allocate it when moves land). The bound: node ids of a sharded cluster
are below 2**47, so replica ids stay int64 (they travel as msgpack integers).
"""

from __future__ import annotations

INCARNATION_BITS = 16
MAX_INCARNATION = (1 << INCARNATION_BITS) - 1
MAX_SHARDED_NODE_ID = (1 << (63 - INCARNATION_BITS)) - 1


def replica_id(node: int, incarnation: int = 0) -> int:
    """The Raft id of ``node``'s replica, incarnation ``incarnation``, in a data group."""
    if not 0 < node <= MAX_SHARDED_NODE_ID:
        raise ValueError(f"a node id of a sharded cluster is in 1..{MAX_SHARDED_NODE_ID}: {node}")
    if not 0 <= incarnation <= MAX_INCARNATION:
        raise ValueError(f"an incarnation is in 0..{MAX_INCARNATION}: {incarnation}")
    return (node << INCARNATION_BITS) | incarnation


def node_of(rid: int) -> int:
    """The node that hosts replica ``rid``."""
    return rid >> INCARNATION_BITS


def incarnation_of(rid: int) -> int:
    return rid & MAX_INCARNATION
