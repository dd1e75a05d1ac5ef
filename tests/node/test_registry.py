"""What a sharded node keeps about its replicas: replicas.json (replica ids, tombstones),
the pushed metadata, and a retired group's log dropped from the shared WAL."""

from __future__ import annotations

from pathlib import Path

from tidekv.node.logstore import NodeLog
from tidekv.node.meta import initial_state
from tidekv.node.registry import (
    ReplicaRegistry,
    load_pushed_state,
    save_pushed_state,
)
from tidekv.raft import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from tidekv.sharding.metadata import encode_state
from tidekv.sharding.replicas import replica_id


def test_registry_keeps_ids_and_tombstones_across_reopens(tmp_path: Path) -> None:
    reg = ReplicaRegistry(str(tmp_path))
    assert not reg.existed and reg.may_create(3, replica_id(2, 0))
    reg.add(3, replica_id(2, 0))
    reg.add(4, replica_id(2, 1))
    reg.retire(3, replica_id(2, 0))
    again = ReplicaRegistry(str(tmp_path))
    assert again.existed
    assert again.live == {4: replica_id(2, 1)}
    assert again.tombstones == {3: 0}
    # an incarnation at or below the tombstone never comes back; a newer one may
    assert not again.may_create(3, replica_id(2, 0))
    assert again.may_create(3, replica_id(2, 1))
    # retiring an id never hosted here still raises the tombstone (a stale message later
    # must not create it); an older one changes nothing
    again.retire(5, replica_id(2, 4))
    again.retire(5, replica_id(2, 2))
    assert ReplicaRegistry(str(tmp_path)).tombstones == {3: 0, 5: 4}


def test_pushed_state_round_trip(tmp_path: Path) -> None:
    assert load_pushed_state(str(tmp_path)) is None
    st = initial_state("c1", 8, [(1, "127.0.0.1:1"), (2, "127.0.0.1:2"), (3, "h:3")], 3)
    save_pushed_state(str(tmp_path), st)
    back = load_pushed_state(str(tmp_path))
    assert back is not None and encode_state(back) == encode_state(st)
    (tmp_path / "cluster.state").write_bytes(b"\x00garbage")
    assert load_pushed_state(str(tmp_path)) is None  # the leader sends a fresh one


def test_dropped_group_is_empty_after_replay_and_checkpoint(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    log = NodeLog(wal)
    for g in (5, 6):
        s = log.group(g)
        s.apply_snapshot(Snapshot(meta=SnapshotMeta(1, 1, ConfState(voters=frozenset({7})))))
        s.append([Entry(term=2, index=i) for i in range(2, 6)])
        s.set_hard_state(HardState(term=2, vote=7, commit=4))
    log.sync()
    log.group(5).drop()
    log.sync()
    log.close()

    def check(log: NodeLog) -> None:
        g5, g6 = log.group(5), log.group(6)
        assert (g5.first_index(), g5.last_index(), g5.hard_state) == (1, 0, HardState())
        assert (g6.first_index(), g6.last_index(), g6.hard_state.vote) == (2, 5, 7)

    log = NodeLog(wal)
    check(log)
    log.checkpoint()
    log.close()
    log = NodeLog(wal)
    check(log)
    # a new incarnation of the group starts from the empty log
    s = log.group(5)
    s.apply_snapshot(Snapshot(meta=SnapshotMeta(9, 3, ConfState(voters=frozenset({8})))))
    s.append([Entry(term=3, index=10)])
    log.close()
    log = NodeLog(wal)
    assert (log.group(5).first_index(), log.group(5).last_index()) == (10, 10)
    log.close()
