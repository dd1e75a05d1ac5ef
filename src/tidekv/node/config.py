"""How a node is configured, and what it remembers about itself between starts.

A node has two addresses: the HTTP API (``address``, what clients and the API's
``POST /v1/cluster/nodes`` name) and the peer (Raft) transport (``raft_address``).
When the peer address is not given it is the HTTP host with the HTTP port + 100
(``127.0.0.1:7070`` -> ``127.0.0.1:7170``).

On first start the node writes ``node.json`` in its data directory (node id, cluster id,
engine); later starts read it, so a node cannot be restarted by mistake with another
identity or engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from dataclasses import dataclass, field
from typing import TypeGuard

from tidekv.errors import InvalidInput
from tidekv.sharding.keys import check_shards

NODE_FILE = "node.json"
DEFAULT_HTTP = "127.0.0.1:7070"
RAFT_PORT_OFFSET = 100
MAX_LIVENESS_DELAY = 7 * 24 * 3600.0
"""The longest ``--down-after``/``--evict-after`` accepted (seconds)."""

NODE_DEFAULT_SHARDS = 64
"""The shard count of a new cluster when ``--shards`` is not given (the issue's default,
:data:`tidekv.sharding.keys.DEFAULT_SHARDS`); ``--shards 1`` is the unsharded cluster of
one data group. ``TIDEKV_DEFAULT_SHARDS`` overrides it (tests, trying it out)."""
DEFAULT_SHARDS_ENV = "TIDEKV_DEFAULT_SHARDS"


def default_shards() -> int:
    """The shard count of a new cluster created without ``--shards``."""
    raw = os.environ.get(DEFAULT_SHARDS_ENV, "").strip()
    if not raw:
        return NODE_DEFAULT_SHARDS
    try:
        return check_shards(int(raw))
    except ValueError as exc:
        raise InvalidInput(f"{DEFAULT_SHARDS_ENV}={raw!r}: {exc}") from None


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port), with a clear error for anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"{address!r} is not a host:port address", address=address)
    return host, int(port)


def default_raft_address(http_address: str) -> str:
    host, port = split_address(http_address)
    if port + RAFT_PORT_OFFSET >= 65536:
        raise InvalidInput(f"no default peer port for {http_address!r}; give one")
    return f"{host}:{port + RAFT_PORT_OFFSET}"


MAX_NODE_ID = 2**63 - 1  # ids travel as msgpack integers (int64) in Raft messages


def is_node_id(value: object) -> TypeGuard[int]:
    """A node id: an int (not a bool) from 1 to :data:`MAX_NODE_ID`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_NODE_ID


@dataclass(frozen=True, slots=True)
class Peer:
    """A cluster member's two addresses."""

    id: int
    address: str  # HTTP host:port
    raft_address: str

    @property
    def http_url(self) -> str:
        return f"http://{self.address}"

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "address": self.address, "raft_address": self.raft_address}

    @classmethod
    def make(cls, node_id: int, address: str, raft_address: str | None = None) -> Peer:
        if not is_node_id(node_id):
            raise InvalidInput(
                f"a node id must be an integer from 1 to {MAX_NODE_ID}", id=str(node_id)[:40]
            )
        split_address(address)
        raft = raft_address or default_raft_address(address)
        split_address(raft)
        return cls(node_id, address, raft)


def parse_peers(spec: str) -> dict[int, Peer]:
    """``1=127.0.0.1:7070,2=127.0.0.1:7071[/127.0.0.1:7171]`` -> peers by id."""
    peers: dict[int, Peer] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        ident, sep, addrs = part.partition("=")
        if not sep or not ident.strip().isdigit():
            raise InvalidInput(f"peer {part!r} is not ID=HOST:PORT[/RAFT_HOST:PORT]")
        http, _, raft = addrs.partition("/")
        peer = Peer.make(int(ident), http.strip(), raft.strip() or None)
        if peer.id in peers:
            raise InvalidInput(f"peer {peer.id} is listed twice")
        peers[peer.id] = peer
    return peers


@dataclass(slots=True)
class NodeConfig:
    """Everything ``tide serve`` needs. The defaults are the embedded default: one node
    on 127.0.0.1:7070 with its data in ./tide-data."""

    node_id: int = 1
    data_dir: str = "./tide-data"
    address: str = DEFAULT_HTTP
    raft_address: str | None = None
    peers: dict[int, Peer] = field(default_factory=dict)
    """The initial members (bootstrap). Empty: a single-node cluster of this node,
    unless ``join`` is set."""
    join: bool = False
    """Start with no membership and wait to be added (``tide cluster add``)."""
    engine: str = "lsm"
    cluster_id: str | None = None
    tick_ms: int = 50
    election_tick: int = 10
    heartbeat_tick: int = 2
    request_timeout: float = 5.0
    compact_every: int = 10_000
    """Compact the Raft log when this many entries were applied since the last time."""
    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20
    shards: int | None = None
    """The shard count, fixed when the cluster is created (None: as recorded in
    ``node.json``, else :func:`default_shards`). 1 is the unsharded cluster: one data
    group whose Raft ids are the node ids. More: a metadata group plus one data group per
    shard (docs/sharding.md)."""
    balance_leaders: bool = True
    """A sharded cluster's metadata leader transfers shard leaderships to spread them
    evenly (docs/sharding.md); requests ride out the short leaderless window of a
    transfer (``leader_wait``)."""
    leader_wait: float | None = None
    """Seconds a request waits for a shard's leader across a leader change (an election,
    a transfer) before it fails with 503; None: two election timeouts plus a second."""

    def election_timeout(self) -> float:
        """One election timeout, in seconds."""
        return self.election_tick * self.tick_ms / 1000

    def leader_wait_s(self) -> float:
        if self.leader_wait is not None:
            return self.leader_wait
        return 2 * self.election_timeout() + 1.0

    quiesce: bool = True
    """Idle groups stop ticking and heartbeating (docs/raft.md, "Quiescence"); the
    environment variable TIDEKV_QUIESCE=0 turns it off too."""
    down_after: float = 10.0
    """Sharded clusters: seconds a member may stay silent (no frame of any kind reaches
    the metadata leader) before it is marked down (docs/sharding.md, "Failure
    handling"). The metadata leader's value is the one that counts."""
    evict_after: float = 300.0
    """Sharded clusters: seconds a member stays marked down before it is evicted from
    the ring and its replicas are re-created on other nodes. The metadata leader's value
    is the one that counts."""

    def me(self) -> Peer:
        return Peer.make(self.node_id, self.address, self.raft_address)

    def check_liveness(self) -> None:
        """``down_after`` and ``evict_after`` are usable (InvalidInput names the option)."""
        election = self.election_tick * self.tick_ms / 1000
        for name, value in (("--down-after", self.down_after), ("--evict-after", self.evict_after)):
            if not math.isfinite(value) or value <= 0:
                raise InvalidInput(f"{name} must be a positive number of seconds", value=value)
            if value > MAX_LIVENESS_DELAY:
                raise InvalidInput(
                    f"{name} must be at most {MAX_LIVENESS_DELAY:.0f} s (7 days)", value=value
                )
        if self.down_after < election:
            raise InvalidInput(
                f"--down-after must be at least the election timeout ({election:g} s with "
                f"--tick-ms {self.tick_ms}): a shorter silence is ordinary",
                value=self.down_after,
            )

    def initial_peers(self) -> dict[int, Peer]:
        if self.join:
            return {}
        if not self.peers:
            return {self.node_id: self.me()}
        if self.node_id not in self.peers:
            raise InvalidInput(f"node {self.node_id} is not among the peers it was given")
        return dict(self.peers)


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: int
    cluster_id: str
    engine: str
    shards: int = 1
    members: tuple[Peer, ...] = ()
    """The members at creation of a sharded cluster (the static placement is a pure
    function of them and ``shards``)."""

    @property
    def sharded(self) -> bool:
        return self.shards > 1


def _derived_cluster_id(shards: int, members: tuple[Peer, ...]) -> str:
    """Every node of a new sharded cluster computes the same initial metadata, cluster id
    included: without ``--cluster-id`` it is a hash of the shard count and the members."""
    spec = ";".join(f"{p.id}={p.address}/{p.raft_address}" for p in members)
    return hashlib.blake2b(f"{shards}|{spec}".encode(), digest_size=8).hexdigest()


def load_or_create_identity(cfg: NodeConfig) -> tuple[Identity, bool]:
    """The node's identity from ``node.json`` (created on first start). Returns it and
    whether it was created now."""
    path = os.path.join(cfg.data_dir, NODE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        members = tuple(Peer(int(i), str(a), str(r)) for i, a, r in raw.get("members", ()))
        ident = Identity(
            int(raw["node_id"]),
            str(raw["cluster_id"]),
            str(raw["engine"]),
            int(raw.get("shards", 1)),
            members,
        )
    except FileNotFoundError:
        ident = None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path} is not a tidekv node file: {exc}") from None
    if ident is not None:
        if ident.node_id != cfg.node_id:
            raise InvalidInput(f"{cfg.data_dir} holds node {ident.node_id}, not node {cfg.node_id}")
        if cfg.cluster_id is not None and cfg.cluster_id != ident.cluster_id:
            raise InvalidInput(f"{cfg.data_dir} belongs to cluster {ident.cluster_id}")
        if cfg.shards is not None and cfg.shards != ident.shards:
            raise InvalidInput(
                f"{cfg.data_dir} belongs to a cluster of {ident.shards} shard(s), not "
                f"{cfg.shards}: the shard count is fixed when a cluster is created"
            )
        return ident, False
    if os.path.exists(os.path.join(cfg.data_dir, "tidekv.json")):
        raise InvalidInput(
            f"{cfg.data_dir} holds an embedded store (tide put --path); "
            "give the node its own --data-dir"
        )
    # a joining node takes the cluster's count: today only an unsharded cluster can grow
    shards = cfg.shards or (1 if cfg.join else default_shards())
    initial: tuple[Peer, ...] = ()
    if shards > 1:
        if cfg.join:  # Node.start asked a member first (node/join.py), which writes it
            raise InvalidInput("a node joining a sharded cluster needs --peers (a member)")
        initial = tuple(sorted(cfg.initial_peers().values(), key=lambda p: p.id))
    os.makedirs(cfg.data_dir, exist_ok=True)
    cluster_id = cfg.cluster_id or (
        _derived_cluster_id(shards, initial) if initial else secrets.token_hex(8)
    )
    ident = Identity(cfg.node_id, cluster_id, cfg.engine, shards, initial)
    write_identity(cfg.data_dir, ident)
    return ident, True


def write_identity(data_dir: str, ident: Identity) -> None:
    """Write ``node.json`` (atomically, fsync-ed)."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, NODE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(
            {
                "node_id": ident.node_id,
                "cluster_id": ident.cluster_id,
                "engine": ident.engine,
                "format": 1,
                "shards": ident.shards,
                "members": [[p.id, p.address, p.raft_address] for p in ident.members],
            },
            f,
        )
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
