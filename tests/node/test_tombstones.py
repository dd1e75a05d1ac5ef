"""The tombstone rule on a real :class:`~tidekv.node.replica.Replica` (real WAL, real LSM
engine, no processes): applying a removal tombstones the id; a later addition of it is a
no-op on every replica; tombstones survive a restart and travel in snapshots."""

from __future__ import annotations

import random
from pathlib import Path

from tidekv.node.config import Peer
from tidekv.node.logstore import NodeLog
from tidekv.node.replica import Replica
from tidekv.node.snapstream import OUTGOING, decode_chunk, decode_header
from tidekv.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
)
from tidekv.raft.types import encode_conf_change
from tidekv.storage import open_engine

PEERS = {i: Peer.make(i, f"127.0.0.1:{20000 + i}") for i in (1, 2, 3)}


def open_replica(root: Path, node_id: int, *, bootstrap: bool) -> tuple[NodeLog, Replica]:
    log = NodeLog(root / "wal")
    storage = log.group(0)
    path = str(root / "engine")
    if bootstrap:
        eng = open_engine("lsm", path)
        try:
            Replica.bootstrap(storage, eng, PEERS)
        finally:
            eng.close()
        log.sync()
    rep = Replica(
        group=0,
        node_id=node_id,
        storage=storage,
        engine_name="lsm",
        engine_path=path,
        origin="test",
        raft_config=lambda applied: Config(id=node_id, rng=random.Random(1), applied=applied),
        wake=lambda: None,
        on_peers_changed=lambda peers: None,
        max_key_bytes=1024,
        max_value_bytes=1 << 20,
        compact_every=1 << 30,
    )
    return log, rep


def conf_entry(index: int, cc: ConfChange) -> Entry:
    return Entry(term=1, index=index, kind=EntryKind.CONF_CHANGE, data=encode_conf_change(cc))


def commit(log: NodeLog, rep: Replica, *ccs: ConfChange) -> None:
    """Log, commit and apply conf changes as the driver would after a Ready."""
    first = rep.storage.last_index() + 1
    entries = [conf_entry(first + k, cc) for k, cc in enumerate(ccs)]
    rep.storage.append(entries)
    rep.storage.set_hard_state(HardState(term=1, vote=0, commit=entries[-1].index))
    log.sync()
    rep._apply(entries)


def close(log: NodeLog, rep: Replica) -> None:
    rep.close()
    log.close()


def test_a_removed_id_is_tombstoned_and_a_later_addition_of_it_is_a_no_op(
    tmp_path: Path,
) -> None:
    log, rep = open_replica(tmp_path, 1, bootstrap=True)
    assert rep.removed == frozenset()
    commit(log, rep, ConfChange(ConfChangeType.REMOVE_NODE, 3))
    assert rep.removed == {3}
    assert set(rep.peers) == {1, 2}
    assert rep.raw.raft.conf_state().voters == {1, 2}
    # an addition of id 3 (say, proposed before the removal was applied) changes nothing
    again = Peer.make(3, "127.0.0.1:29999")
    commit(
        log,
        rep,
        Replica.add_change(again, learner=True),
        Replica.add_change(again, learner=False),
    )
    assert rep.applied == 4
    cs = rep.raw.raft.conf_state()
    assert (cs.voters, cs.learners) == ({1, 2}, frozenset())
    assert set(rep.peers) == {1, 2} and 3 not in rep.raw.raft.prs
    # other ids still come and go; each removal adds a tombstone
    four = Peer.make(4, "127.0.0.1:20004")
    commit(log, rep, Replica.add_change(four, learner=True))
    assert rep.raw.raft.conf_state().learners == {4} and rep.removed == {3}
    commit(log, rep, ConfChange(ConfChangeType.REMOVE_NODE, 4))
    assert rep.removed == {3, 4}
    close(log, rep)

    # a restart reads them back from the engine
    log, rep = open_replica(tmp_path, 1, bootstrap=False)
    assert rep.removed == {3, 4}
    assert set(rep.peers) == {1, 2}
    # and the core has the membership as applied, not the log's starting one (1, 2, 3)
    cs = rep.raw.raft.conf_state()
    assert (cs.voters, cs.learners) == ({1, 2}, frozenset())
    close(log, rep)


def test_tombstones_travel_in_snapshots(tmp_path: Path) -> None:
    log, rep = open_replica(tmp_path / "a", 1, bootstrap=True)
    commit(log, rep, ConfChange(ConfChangeType.REMOVE_NODE, 3))
    snap = rep._make_snapshot()
    sid = decode_header(snap.data)
    assert sid is not None
    source = OUTGOING.take(sid)
    assert source is not None
    payloads = []
    while (p := source.next_chunk()) is not None:
        payloads.append(p)
    source.close()
    close(log, rep)

    # a node with an empty disk (it joins) learns them when it installs the snapshot
    (tmp_path / "b").mkdir()
    log, fresh = open_replica(tmp_path / "b", 5, bootstrap=False)
    assert fresh.removed == frozenset()
    sink = fresh.snapshot_sink(Message(MessageType.SNAP, to=5, frm=1, term=1, snapshot=snap))
    assert sink is not None
    sink.open()
    for p in payloads:
        chunk = decode_chunk(p)
        (sink.finish if chunk.last else sink.write)(chunk)
    fresh._install_snapshot(snap)
    assert fresh.removed == {3}
    assert set(fresh.peers) == {1, 2}
    close(log, fresh)
