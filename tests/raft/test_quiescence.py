"""Quiescence (Config.quiesce): idle groups stop ticking; anything that needs them wakes
them; a quiesced leader trusts no lease; the driver's liveness signal revives a group
whose quiesced leader died."""

from __future__ import annotations

from tidekv.raft import ReadOnlyOption, Role

from .harness import Cluster


def quiet_cluster(**cfg: object) -> Cluster:
    c = Cluster([1, 2, 3], quiesce=True, heartbeat_tick=1, election_tick=10, **cfg)
    c.elect(1)
    return c


def beat_until_quiet(c: Cluster, leader: int = 1, max_beats: int = 20) -> int:
    """Tick the leader (one heartbeat per tick) until the whole group is quiesced."""
    for n in range(1, max_beats + 1):
        c.tick(leader)
        c.stabilize()
        if all(node.raw.quiesced for node in c.nodes.values()):
            return n
    raise AssertionError("the group never quiesced: " + "; ".join(map(c.status, c.nodes)))


def test_an_idle_group_goes_quiet_and_stays_quiet() -> None:
    c = quiet_cluster()
    c.propose(1, b"x")
    c.stabilize()
    beat_until_quiet(c)
    term = c.nodes[1].raw.raft.term
    for _ in range(100):  # ten election timeouts
        for nid in (1, 2, 3):
            c.tick(nid)
        assert c.stabilize() == []  # not one message
    assert all(n.raw.raft.term == term for n in c.nodes.values())
    assert c.nodes[1].raw.raft.role == Role.LEADER


def test_without_quiesce_the_leader_keeps_heartbeating() -> None:
    c = Cluster([1, 2, 3], heartbeat_tick=1, election_tick=10)
    c.elect(1)
    for _ in range(20):
        c.tick(1)
        assert c.stabilize() != []
    assert not any(n.raw.quiesced for n in c.nodes.values())


def test_a_proposal_on_the_leader_wakes_it_and_the_group_goes_quiet_again() -> None:
    c = quiet_cluster()
    beat_until_quiet(c)
    c.propose(1, b"a")
    assert not c.nodes[1].raw.quiesced
    c.stabilize()
    assert all(n.applied[-1][1] == b"a" for n in c.nodes.values())
    assert not any(n.raw.quiesced for n in c.nodes.values())
    beat_until_quiet(c)


def test_a_proposal_on_a_follower_wakes_the_leader_through_the_forward() -> None:
    c = quiet_cluster()
    beat_until_quiet(c)
    c.propose(3, b"via-3")
    c.stabilize()
    assert all(n.applied[-1][1] == b"via-3" for n in c.nodes.values())


def test_a_quiesced_leader_serves_no_lease_read_and_reads_take_a_round() -> None:
    control = Cluster([1, 2, 3], heartbeat_tick=1, read_only_option=ReadOnlyOption.LEASE_BASED)
    control.elect(1)
    control.tick(1)
    control.stabilize()
    assert control.nodes[1].raw.raft.lease_valid()  # a fresh quorum ack: the lease holds
    c = quiet_cluster(read_only_option=ReadOnlyOption.LEASE_BASED)
    beat_until_quiet(c)
    r = c.nodes[1].raw.raft
    assert not r.lease_valid()
    c.nodes[1].raw.read_index(b"r1")
    c.process_ready()
    assert c.nodes[1].read_states == []  # not answered from the (stale) lease
    c.stabilize()
    assert [rs.request_ctx for rs in c.nodes[1].read_states] == [b"r1"]


def test_acks_of_heartbeats_sent_before_quiescing_never_validate_a_lease() -> None:
    c = quiet_cluster(read_only_option=ReadOnlyOption.LEASE_BASED)
    c.stabilize()
    c.tick(1)  # the leader quiesces: its quiesce heartbeats leave...
    c.process_ready()
    r = c.nodes[1].raw.raft
    assert r.quiesced
    # ...the leader wakes (its clock stood still meanwhile), then the old acks arrive
    c.nodes[1].raw.unquiesce()
    for nid in (2, 3):
        c.deliver(nid)
        c.process_ready()
    c.deliver(1, count=2)  # the two acks of the quiesce heartbeats come first in line
    assert not r.lease_valid()


def test_a_dead_quiesced_leader_is_replaced_once_the_driver_wakes_the_followers() -> None:
    c = quiet_cluster()
    beat_until_quiet(c)
    c.isolate(1)
    for _ in range(100):
        c.tick(2)
        c.tick(3)
        c.stabilize()
    # quiesced followers never time out: only the node-level liveness signal saves them
    assert c.nodes[2].raw.raft.lead == 1 and c.nodes[3].raw.raft.lead == 1
    for nid in (2, 3):
        c.nodes[nid].raw.unquiesce()
    for _ in range(100):
        c.tick(2)
        c.tick(3)
        c.stabilize()
        if c.leader() in (2, 3):
            break
    new = c.leader()
    assert new in (2, 3)
    c.propose(new, b"after")
    c.stabilize()
    assert c.nodes[2].applied[-1][1] == b"after" and c.nodes[3].applied[-1][1] == b"after"


def test_a_spurious_wake_of_a_follower_wakes_the_leader_and_keeps_it() -> None:
    c = quiet_cluster()
    beat_until_quiet(c)
    term = c.nodes[1].raw.raft.term
    c.nodes[3].raw.unquiesce()  # liveness said node 1 was silent, but it is not
    c.stabilize()
    assert not c.nodes[1].raw.quiesced  # the wake-up reached the leader
    for _ in range(3):
        c.tick(1)
        c.tick(3)
        c.stabilize()
    assert c.nodes[3].raw.raft.lead == 1 and c.nodes[3].raw.raft.term == term


def test_a_lost_quiesce_heartbeat_leaves_a_follower_that_campaigns_and_wakes_everyone() -> None:
    c = quiet_cluster()
    c.stabilize()
    c.tick(1)
    c.process_ready()
    c.drop(3)  # node 3 never hears the quiesce heartbeat
    c.stabilize()
    assert c.nodes[1].raw.quiesced and c.nodes[2].raw.quiesced
    assert not c.nodes[3].raw.quiesced
    term = c.nodes[1].raw.raft.term
    c.tick_election(3)  # it pre-votes; node 2 refuses (it has a leader) but wakes node 1
    c.stabilize()
    assert c.nodes[3].raw.raft.lead == 1 and c.nodes[3].raw.raft.term == term
    assert c.nodes[1].raw.raft.role == Role.LEADER
    beat_until_quiet(c)


def test_a_transfer_wakes_the_group_and_completes() -> None:
    c = quiet_cluster()
    beat_until_quiet(c)
    c.nodes[1].raw.transfer_leader(2)
    c.stabilize()
    assert c.nodes[2].raw.raft.role == Role.LEADER


def test_a_higher_term_wakes_a_quiesced_node() -> None:
    c = quiet_cluster()
    beat_until_quiet(c)
    c.isolate(1)
    for nid in (2, 3):
        c.nodes[nid].raw.unquiesce()
    for _ in range(100):
        c.tick(2)
        c.tick(3)
        c.stabilize()
        if c.leader() in (2, 3):
            break
    new = c.leader()
    assert new in (2, 3)
    assert c.nodes[1].raw.quiesced and c.nodes[1].raw.raft.role == Role.LEADER
    c.heal()
    c.tick(new)
    c.stabilize()  # the new leader's heartbeat of a higher term reaches the old one
    assert c.nodes[1].raw.raft.role == Role.FOLLOWER and c.nodes[1].raw.raft.lead == new
