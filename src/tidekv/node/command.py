"""What a Raft entry of a data group carries, and the node address book.

A :class:`Command` is a :class:`~tidekv.statemachine.WriteCommand` plus the request id
that lets the proposing node hand the outcome back to the waiting request. The proposer
chooses everything that must be identical on every replica (HLC time, origin, author);
the parents (the key's heads) are taken at apply time, so concurrent writes to one key
chain instead of becoming siblings.

The address book (node id -> HTTP and peer addresses) is replicated with the membership:
a conf-change entry's context holds the added node's :class:`~tidekv.node.config.Peer`,
and applying it writes ``M node:<id>`` in the same batch as the applied index.

A removed id is tombstoned (``M removed:<id>``, written when its removal is applied, in
the same batch): it is never a member again. A Raft id names one incarnation of a
replica's log and vote; re-using it lets messages and acknowledgements of the old
incarnation count for the new one (a leader missing a committed entry). Tombstones live
in the engine, so snapshots carry them and every replica applies the same rule.
"""

from __future__ import annotations

import msgspec

from tidekv.node.config import Peer
from tidekv.statemachine import WriteCommand, meta_key
from tidekv.storage import Engine, Op, prefix_end
from tidekv.versioning import HLCTimestamp


class Command(msgspec.Struct, array_like=True, frozen=True):
    rid: bytes
    key: str
    value: bytes | None
    content_type: str
    hlc_wall: int
    hlc_logical: int
    origin: str
    author: str = ""
    if_match: str | None = None
    if_none_match: bool = False
    require_exists: bool = False
    idempotency_key: str | None = None
    term: int = 0
    """The term of the leader the proposer handed this command to (0: not recorded, an
    older node). A leader appends a forwarded command only in that term, so a proposer
    that applies an entry of a later term without having seen its request id knows the
    command never commits, and may propose it again (docs/raft.md, "Riding out a leader
    change")."""

    def write_command(self) -> WriteCommand:
        return WriteCommand(
            key=self.key,
            value=self.value,
            content_type=self.content_type,
            hlc=HLCTimestamp.trusted(self.hlc_wall, self.hlc_logical),
            origin=self.origin,
            author=self.author,
            if_match=self.if_match,
            if_none_match=self.if_none_match,
            require_exists=self.require_exists,
            idempotency_key=self.idempotency_key,
        )


_enc = msgspec.msgpack.Encoder()
_cmd_dec = msgspec.msgpack.Decoder(Command)


def encode_command(cmd: Command) -> bytes:
    return _enc.encode(cmd)


def decode_command(data: bytes) -> Command:
    return _cmd_dec.decode(data)


class PeerRecord(msgspec.Struct, frozen=True):
    id: int
    address: str
    raft_address: str


_peer_dec = msgspec.msgpack.Decoder(PeerRecord)
NODE_PREFIX = meta_key("node:")


def encode_peer(peer: Peer) -> bytes:
    return _enc.encode(PeerRecord(peer.id, peer.address, peer.raft_address))


def decode_peer(data: bytes) -> Peer:
    r = _peer_dec.decode(data)
    return Peer(r.id, r.address, r.raft_address)


def peer_key(node_id: int) -> bytes:
    return NODE_PREFIX + str(node_id).encode()


def peer_put(peer: Peer) -> Op:
    return (peer_key(peer.id), encode_peer(peer))


def peer_delete(node_id: int) -> Op:
    return (peer_key(node_id), None)


def load_peers(engine: Engine) -> dict[int, Peer]:
    end = prefix_end(NODE_PREFIX)
    return {p.id: p for p in (decode_peer(v) for _k, v in engine.scan(NODE_PREFIX, end))}


REMOVED_PREFIX = meta_key("removed:")


def removed_key(node_id: int) -> bytes:
    return REMOVED_PREFIX + str(node_id).encode()


def removed_put(node_id: int) -> Op:
    return (removed_key(node_id), b"1")


def load_removed(engine: Engine) -> frozenset[int]:
    """The tombstoned ids: removed from the group, never to be members again."""
    end = prefix_end(REMOVED_PREFIX)
    n = len(REMOVED_PREFIX)
    return frozenset(int(k[n:]) for k, _v in engine.scan(REMOVED_PREFIX, end))
