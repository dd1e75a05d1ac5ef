"""``POST /v1/cluster/nodes`` and ``DELETE /v1/cluster/nodes/{id}`` on a sharded cluster.

A join or a decommission is one metadata command (``Join`` / ``Decommission``): the
metadata re-plans every shard whose ring placement changed, and the shard leaders run the
moves (:mod:`tidekv.node.mover`). The command is proposed through this node's metadata
replica (a follower forwards it to its leader over Raft); a node outside the metadata
group answers NotLeader naming a metadata voter, and the HTTP layer forwards the request
there. The answer does not wait for the moves: ``GET /v1/cluster`` shows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidekv.errors import Conflict, InvalidInput, NotFound, NotLeader, Unavailable
from tidekv.node.config import Peer
from tidekv.raft import NONE
from tidekv.sharding import metadata
from tidekv.sharding.metadata import MemberState
from tidekv.sharding.replicas import MAX_SHARDED_NODE_ID

if TYPE_CHECKING:
    from tidekv.node.server import Node


async def _propose(node: Node, cmd: metadata.Command, timeout: float) -> None:
    meta = node.meta
    if meta is not None and meta.can_propose():
        await meta.propose(cmd, timeout)
        return
    lead = None
    if meta is not None and meta.raw.raft.lead != NONE:
        lead = meta.raw.raft.lead
    if lead is None and meta is None:
        lead = node.meta_leader_hint
        if lead is None:
            voters = node.meta_group_voters()
            lead = next((v for v in voters if v != node.cfg.node_id), None)
    peer = None if lead is None else node.members.get(lead)
    if peer is None:
        raise Unavailable("the metadata group has no leader right now")
    raise NotLeader(
        "this node does not replicate the cluster metadata",
        leader=peer.id,
        leader_url=peer.http_url,
    )


def _member_dict(node: Node, m: metadata.Member) -> dict[str, Any]:
    peer = node.members.get(m.id)
    return {
        "id": m.id,
        "address": m.address,
        "raft_address": m.raft_address or (None if peer is None else peer.raft_address),
        "state": m.state.value,
    }


def _identity(node: Node) -> dict[str, Any]:
    """What a joining node writes to its node.json: the cluster and its creation members
    (the creation state is a pure function of them)."""
    ident = node.identity
    return {
        "cluster_id": ident.cluster_id,
        "shard_count": ident.shards,
        "members": [[p.id, p.address, p.raft_address] for p in ident.members],
    }


async def join_node(
    node: Node, node_id: int, address: str, raft_address: str | None, timeout: float
) -> dict[str, Any]:
    peer = Peer.make(node_id, address, raft_address)
    if node_id > MAX_SHARDED_NODE_ID:
        raise InvalidInput(
            f"a node id of a sharded cluster is at most {MAX_SHARDED_NODE_ID}", field="id"
        )
    st = node.cluster
    assert st is not None
    old = st.members.get(node_id)
    if old is not None and old.state is not MemberState.REMOVED:
        known = node.members.get(node_id)
        same = old.address == peer.address and (
            known is None or known.raft_address == peer.raft_address
        )
        if same and old.state is MemberState.ACTIVE:
            return {**_member_dict(node, old), **_identity(node)}  # a retry of the same join
        raise Conflict(
            f"node {node_id} is already a member ({old.state.value}, at {old.address})",
            id=node_id,
        )
    for m in st.members.values():
        if m.id == node_id or m.state is MemberState.REMOVED:
            continue
        other = node.members.get(m.id)
        taken = {m.address} | ({other.raft_address} if other is not None else set())
        for what, addr in (("address", peer.address), ("peer address", peer.raft_address)):
            if addr in taken:
                raise Conflict(
                    f"{what} {addr} is already node {m.id}'s; a new node needs its own",
                    id=node_id,
                    address=addr,
                )
    cmd = metadata.Join(node_id, peer.address, 1, raft_address=peer.raft_address)
    await _propose(node, cmd, timeout)
    return {**peer.to_dict(), "state": MemberState.ACTIVE.value, **_identity(node)}


async def decommission_node(node: Node, node_id: int, timeout: float) -> dict[str, Any]:
    st = node.cluster
    assert st is not None
    m = st.members.get(node_id)
    if m is None or m.state is MemberState.REMOVED:
        raise NotFound(f"node {node_id} is not a member", id=node_id)
    if m.state is not MemberState.DECOMMISSIONING:
        await _propose(node, metadata.Decommission(node_id), timeout)
    st = node.cluster
    assert st is not None
    now = st.members.get(node_id, m)
    return {"id": node_id, "state": now.state.value}
