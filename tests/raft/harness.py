"""An in-memory cluster of RawNodes for tests: a perfect driver over a controllable network.

Each node has a :class:`MemoryStorage` and a toy state machine (the list of applied
NORMAL payloads). Messages wait in a per-destination FIFO until delivered, so tests and
transcripts decide exactly when and what is delivered; ``cut`` links drop messages.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import msgspec

from tidekv.raft import (
    ConfChange,
    Config,
    ConfState,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Role,
    decode_conf_change,
)

MT = MessageType

_SHORT = {
    MT.APP: "App",
    MT.APP_RESP: "AppResp",
    MT.VOTE: "Vote",
    MT.VOTE_RESP: "VoteResp",
    MT.PRE_VOTE: "PreVote",
    MT.PRE_VOTE_RESP: "PreVoteResp",
    MT.HEARTBEAT: "Heartbeat",
    MT.HEARTBEAT_RESP: "HeartbeatResp",
    MT.SNAP: "Snap",
    MT.PROPOSE: "Prop",
    MT.READ_INDEX: "ReadIndex",
    MT.READ_INDEX_RESP: "ReadIndexResp",
    MT.TIMEOUT_NOW: "TimeoutNow",
    MT.TRANSFER_LEADER: "TransferLeader",
}


def fmt_entry(e: Any) -> str:
    if e.kind == EntryKind.NOOP:
        body = "noop"
    elif e.kind == EntryKind.CONF_CHANGE:
        cc = decode_conf_change(e.data)
        body = f"conf {cc.type.name.lower()} {cc.node_id}"
    else:
        body = e.data.decode(errors="replace")
    return f"{e.term}/{e.index} {body}"


def fmt_msg(m: Message) -> str:
    """One readable line per message; only the fields that type uses."""
    t = m.type
    s = f"{m.frm}->{m.to} {_SHORT.get(t, t.name)} t{m.term}"
    if t == MT.APP:
        s += f" prev={m.log_term}/{m.index} commit={m.commit}"
        if m.entries:
            s += " [" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    elif t == MT.APP_RESP:
        if m.reject:
            s += f" REJECT {m.index} hint={m.hint_term}/{m.reject_hint}"
        else:
            s += f" index={m.index}"
    elif t in (MT.VOTE, MT.PRE_VOTE):
        s += f" last={m.log_term}/{m.index}"
        if m.context:
            s += f" ({m.context.decode()})"
    elif t in (MT.VOTE_RESP, MT.PRE_VOTE_RESP):
        s += " REJECT" if m.reject else " granted"
    elif t == MT.HEARTBEAT:
        s += f" commit={m.commit}"
        if m.context:
            s += f" round={int.from_bytes(m.context, 'big')}"
    elif t == MT.HEARTBEAT_RESP:
        if m.context:
            s += f" round={int.from_bytes(m.context, 'big')}"
    elif t == MT.SNAP and m.snapshot is not None:
        s += f" snap={m.snapshot.meta.term}/{m.snapshot.meta.index}"
    elif t in (MT.READ_INDEX, MT.READ_INDEX_RESP):
        s += f" ctx={m.context.decode(errors='replace')}"
        if t == MT.READ_INDEX_RESP:
            s += f" index={m.index}"
    elif t == MT.PROPOSE:
        s += " [" + ", ".join(e.data.decode(errors="replace") for e in m.entries) + "]"
    return s


_sm_encoder = msgspec.msgpack.Encoder()
_sm_decoder = msgspec.msgpack.Decoder(list[tuple[int, bytes]])


class Node:
    """One node and the state its driver keeps: storage, state machine, conf history."""

    def __init__(self, nid: int, storage: MemoryStorage, cfg: Config) -> None:
        self.id = nid
        self.storage = storage
        self.cfg = cfg
        self.raw = RawNode(cfg, storage)
        snap = storage.snapshot()
        # a restarted state machine starts from the snapshot, then re-applies the log
        self.applied: list[tuple[int, bytes]] = _sm_decoder.decode(snap.data) if snap.data else []
        self.applied_index = self.raw.raft.log.applied
        self.conf = storage.initial_state()[1]
        self.conf_history: list[tuple[int, ConfState]] = [(self.applied_index, self.conf)]
        self.read_states: list[ReadState] = []

    def conf_at(self, index: int) -> ConfState:
        conf = self.conf_history[0][1]
        for i, c in self.conf_history:
            if i <= index:
                conf = c
        return conf


class Cluster:
    """Nodes ``ids`` (voters) plus ``learners``, all bootstrapped with the same config."""

    def __init__(
        self,
        ids: Iterable[int],
        learners: Iterable[int] = (),
        seed: int = 0,
        **cfg: Any,
    ) -> None:
        self.rng = random.Random(seed)
        self.cfg_kwargs = cfg
        self.conf = ConfState(frozenset(ids), frozenset(learners))
        self.nodes: dict[int, Node] = {}
        self.queues: dict[int, list[Message]] = {}
        self.cut: set[tuple[int, int]] = set()
        self.dropped = 0
        self.trace: list[str] = []
        for nid in sorted(self.conf.voters | self.conf.learners):
            self.add_node(nid, MemoryStorage(self.conf))

    def add_node(self, nid: int, storage: MemoryStorage | None = None) -> Node:
        """Create (or restart) node ``nid`` on ``storage`` (a fresh empty one if None)."""
        cfg = Config(id=nid, rng=random.Random(self.rng.randrange(1 << 30)), **self.cfg_kwargs)
        node = Node(nid, storage if storage is not None else MemoryStorage(), cfg)
        self.nodes[nid] = node
        self.queues.setdefault(nid, [])
        return node

    def restart(self, nid: int) -> Node:
        """Crash ``nid`` (losing its volatile state and queued input) and start it again."""
        old = self.nodes[nid]
        self.queues[nid] = []
        return self.add_node(nid, old.storage)

    # -- network ------------------------------------------------------------------------

    def send(self, msgs: list[Message]) -> None:
        for m in msgs:
            if (m.frm, m.to) in self.cut or m.to not in self.queues:
                self.dropped += 1
                continue
            self.queues[m.to].append(m)

    def partition(self, *groups: Iterable[int]) -> None:
        """Only nodes of the same group can talk; nodes in no group are isolated."""
        gs = [set(g) for g in groups]
        self.cut = set()
        for a in self.nodes:
            for b in self.nodes:
                if a != b and not any(a in g and b in g for g in gs):
                    self.cut.add((a, b))

    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def heal(self) -> None:
        self.cut = set()

    def deliver(self, nid: int | None = None, count: int | None = None) -> list[Message]:
        """Step queued messages to ``nid`` (all nodes if None); returns them."""
        out: list[Message] = []
        targets = [nid] if nid is not None else sorted(self.queues)
        for t in targets:
            q = self.queues[t]
            n = len(q) if count is None else min(count, len(q))
            batch, self.queues[t] = q[:n], q[n:]
            for m in batch:
                if (m.frm, m.to) in self.cut:
                    self.dropped += 1
                    continue
                out.append(m)
                self.nodes[t].raw.step(m)
        return out

    def drop(self, nid: int) -> list[Message]:
        msgs, self.queues[nid] = self.queues[nid], []
        return msgs

    # -- driver ---------------------------------------------------------------------------

    def handle_ready(self, nid: int) -> bool:
        """Process one Ready of ``nid`` like a correct driver; False if there was none."""
        node = self.nodes[nid]
        raw = node.raw
        if not raw.has_ready():
            return False
        rd = raw.ready()
        self.send(rd.messages)
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            node.applied = _sm_decoder.decode(rd.snapshot.data) if rd.snapshot.data else []
            node.applied_index = rd.snapshot.meta.index
            node.conf = rd.snapshot.meta.conf
            node.conf_history = [(node.applied_index, node.conf)]
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.send(rd.persisted_messages)
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                node.applied.append((e.index, e.data))
            elif e.kind == EntryKind.CONF_CHANGE:
                node.conf = raw.apply_conf_change(decode_conf_change(e.data))
                node.conf_history.append((e.index, node.conf))
            node.applied_index = e.index
        node.read_states.extend(rd.read_states)
        raw.advance(rd)
        return True

    def stabilize(self, max_rounds: int = 10_000) -> list[Message]:
        """Handle readies and deliver messages until nothing moves; returns deliveries."""
        out: list[Message] = []
        for _ in range(max_rounds):
            moved = False
            for nid in sorted(self.nodes):
                while self.handle_ready(nid):
                    moved = True
            delivered = self.deliver()
            if delivered:
                moved = True
                out.extend(delivered)
            if not moved:
                return out
        raise AssertionError("cluster did not stabilize")

    def process_ready(self) -> None:
        for nid in sorted(self.nodes):
            while self.handle_ready(nid):
                pass

    # -- conveniences ----------------------------------------------------------------------

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].raw.tick()

    def tick_election(self, nid: int) -> None:
        """Tick ``nid`` until its (randomized) election timeout has surely passed."""
        self.tick(nid, 2 * self.nodes[nid].cfg.election_tick)

    def run_until_leader(self, max_ticks: int = 1000) -> int:
        """Tick every node once per round and stabilize until some node leads."""
        for _ in range(max_ticks):
            for nid in sorted(self.nodes):
                self.tick(nid)
            self.stabilize()
            ld = self.leader()
            if ld is not None:
                return ld
        raise AssertionError("no leader elected")

    def campaign(self, nid: int) -> None:
        self.nodes[nid].raw.campaign()

    def elect(self, nid: int) -> None:
        self.campaign(nid)
        self.stabilize()
        assert self.nodes[nid].raw.raft.role == Role.LEADER, self.status(nid)

    def propose(self, nid: int, data: bytes) -> None:
        self.nodes[nid].raw.propose(data)

    def conf_change(self, nid: int, cc: ConfChange) -> None:
        self.nodes[nid].raw.propose_conf_change(cc)

    def leader(self) -> int | None:
        leads = [n.id for n in self.nodes.values() if n.raw.raft.role == Role.LEADER]
        if not leads:
            return None
        # with partitions, several nodes may believe they lead: take the highest term
        return max(leads, key=lambda i: self.nodes[i].raw.raft.term)

    def status(self, nid: int) -> str:
        st = self.nodes[nid].raw.status()
        s = (
            f"{nid}: {st.role.name.lower()} term={st.term} lead={st.lead} vote={st.vote} "
            f"last={st.last_index} commit={st.commit} applied={st.applied}"
        )
        if st.lead_transferee:
            s += f" transferring_to={st.lead_transferee}"
        for pid, p in st.progress.items():
            s += (
                f"\n  {pid}: {p.state.name.lower()} match={p.match} next={p.next}"
                f"{' learner' if p.is_learner else ''}"
                f"{' inflight=' + str(p.inflight) if p.inflight else ''}"
                f"{' pending_snap=' + str(p.pending_snapshot) if p.pending_snapshot else ''}"
            )
        return s

    def log_of(self, nid: int) -> str:
        r = self.nodes[nid].raw.raft
        lo = r.log.first_index()
        ents = r.log.slice(lo, r.log.last_index() + 1)
        head = f"{nid}: first={lo} "
        return head + ("[" + ", ".join(fmt_entry(e) for e in ents) + "]")

    def compact(self, nid: int, index: int) -> None:
        """Snapshot ``nid``'s state machine at applied ``index`` and drop the log before it."""
        node = self.nodes[nid]
        if index > node.applied_index:
            raise ValueError(f"node {nid} applied only {node.applied_index}, not {index}")
        data = _sm_encoder.encode([(i, d) for i, d in node.applied if i <= index])
        node.storage.create_snapshot(index, node.conf_at(index), data)
        node.storage.compact(index)

    def applied_data(self, nid: int) -> list[bytes]:
        return [d for _, d in self.nodes[nid].applied]
