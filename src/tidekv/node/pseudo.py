"""The pseudo-groups: node-to-node messages that ride the Raft transport's frames under a
negative group id no replica has. All of them are here, so two features cannot take the
same id (the metadata push and the balancing hints once did, after a merge: the push was
swallowed as a hint and nodes outside the metadata group never learnt of a join)."""

from __future__ import annotations

LIVENESS_GROUP = -1
"""The per-node-pair liveness pings (quiescence, the failure detector)."""

CLUSTER_GROUP = -2
"""The metadata push: ``index`` = the state's revision, ``context`` = ``encode_state``
(sent by the metadata leader to every member)."""

RETIRE_GROUP = -3
"""A shard leader's "your replica is out of the group": ``index`` = the shard,
``commit`` = the replica id to retire (sent to that replica's node)."""

BALANCE_GROUP = -4
"""Leader-balancing hints: a ``MsgTransferLeader`` from the metadata leader to the node
leading a shard, ``index`` = the shard, ``commit`` = the node to hand the leadership to
(replica ids are local knowledge: the receiver picks its replica)."""

PSEUDO_GROUPS = frozenset({LIVENESS_GROUP, CLUSTER_GROUP, RETIRE_GROUP, BALANCE_GROUP})
assert len(PSEUDO_GROUPS) == 4, "two pseudo-groups share an id"
