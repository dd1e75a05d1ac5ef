"""The cluster metadata state machine: deterministic, serializable, moves run to the end."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.sharding import Ring, check_plan
from tidekv.sharding.metadata import (
    ClusterState,
    Command,
    ConfSeen,
    Create,
    Decommission,
    Evict,
    Join,
    LeaderSeen,
    MarkDown,
    MarkUp,
    MemberState,
    StepDone,
    apply,
    decode_command,
    decode_state,
    encode_command,
    encode_state,
    evictions,
)


def _cluster(n: int = 5, shards: int = 64) -> ClusterState:
    st_ = ClusterState()
    assert (
        apply(st_, Create("c1", shards, [(i, f"127.0.0.1:{7000 + i}", 1) for i in range(1, n + 1)]))
        is None
    )
    return st_


def _finish_moves(state: ClusterState) -> int:
    """Play the executor: report every step of every move done, in order."""
    done = 0
    for s, sh in sorted(state.movements().items()):
        check_plan(sh.voters, sh.target, sh.steps, learners=sh.learners, down=state.down())
        while state.shard_map[s].moving:
            assert apply(state, StepDone(s, state.shard_map[s].next_step)) is None
            done += 1
    return done


def test_create_places_every_shard_on_the_ring() -> None:
    s = _cluster()
    want = Ring(dict.fromkeys(range(1, 6), 1)).place(64, 3)
    assert [s.shard_map[i].voters for i in range(64)] == [list(r) for r in want.replicas]
    assert not s.movements() and s.meta_voters == [1, 2, 3, 4, 5]
    assert apply(s, Create("c1", 64, [(9, "x:1", 1)])) == "the cluster already exists"


def test_join_moves_only_changed_shards_and_ends_at_the_new_ring() -> None:
    s = _cluster()
    assert apply(s, Join(6, "127.0.0.1:7006")) is None
    want = Ring(dict.fromkeys(range(1, 7), 1)).place(64, 3)
    moving = s.movements()
    assert set(moving) == {i for i in range(64) if 6 in want.replicas[i]}
    assert abs(len(moving) - 32) <= 8
    _finish_moves(s)
    assert [set(s.shard_map[i].voters) for i in range(64)] == [set(r) for r in want.replicas]
    assert not s.movements()


def test_decommission_drains_then_removes_the_member() -> None:
    s = _cluster(6)
    assert apply(s, Decommission(3)) is None
    assert s.members[3].state is MemberState.DECOMMISSIONING
    _finish_moves(s)
    assert s.members[3].state is MemberState.REMOVED
    assert all(3 not in sh.voters for sh in s.shard_map.values())
    assert 3 not in s.meta_voters and len(s.meta_voters) == 5


def test_a_long_outage_re_replicates_and_a_return_moves_the_share_back() -> None:
    s = _cluster(5)
    assert apply(s, MarkDown(2, at=1000)) is None
    assert not s.movements()  # a short outage moves nothing
    assert evictions(s, now=1500, down_after=600) == []
    assert evictions(s, now=1600, down_after=600) == [Evict(2)]
    assert apply(s, Evict(2)) is None
    moving = s.movements()
    assert moving and all(2 in sh.voters for sh in moving.values())
    # replicas on the down node are replaced first, and no plan needs node 2 to act
    for sh in moving.values():
        assert sh.steps[0].node != 2 and sh.steps[3].node == 2
    _finish_moves(s)
    assert all(2 not in sh.voters and len(sh.voters) == 3 for sh in s.shard_map.values())
    assert apply(s, MarkUp(2, at=5000)) is None
    assert s.members[2].state is MemberState.ACTIVE and s.movements()
    _finish_moves(s)
    want = Ring(dict.fromkeys(range(1, 6), 1)).place(64, 3)
    assert [set(s.shard_map[i].voters) for i in range(64)] == [set(r) for r in want.replicas]


def test_no_eviction_without_a_node_to_re_replicate_on() -> None:
    s = _cluster(4)
    assert apply(s, MarkDown(4, at=0)) is None
    assert evictions(s, now=1000, down_after=600) == [Evict(4)]  # 3 members remain
    assert apply(s, Evict(4)) is None
    assert apply(s, MarkDown(3, at=0)) is None
    # only 2 would remain for 3 replicas: node 3's replicas stay where they are
    assert evictions(s, now=10**6, down_after=600) == []
    s3 = _cluster(3)
    assert apply(s3, MarkDown(1, at=0)) is None
    assert evictions(s3, now=10**6, down_after=600) == []


def test_refused_commands_change_nothing() -> None:
    s = _cluster(3)
    before = encode_state(s)
    assert apply(s, Join(2, "x:1")) == "node 2 is already a member (active)"
    assert apply(s, Join(9, "x:1", weight=0)) is not None
    assert apply(s, Evict(1)) == "node 1 is up; only a down node is evicted"
    assert apply(s, StepDone(0, 0)) == "shard 0: step 0 is not the next step"
    assert apply(s, MarkUp(1, at=5)) == "node 1 is already up"
    assert apply(s, Decommission(7)) == "node 7 is not a member"
    assert apply(s, LeaderSeen(99, 1, 1)) == "no shard 99"
    assert encode_state(s) == before
    assert apply(s, LeaderSeen(0, 1, 5)) is None
    assert apply(s, LeaderSeen(0, 2, 4)) is not None  # an older term
    assert s.leaders[0].node == 1


def test_conf_seen_makes_the_record_follow_the_group_and_replans() -> None:
    s = _cluster(5)
    apply(s, Join(6, "x:6"))
    shard, sh = next(iter(sorted(s.movements().items())))
    old = list(sh.voters)
    # the learner was added (and promoted) but the metadata never heard of it
    assert apply(s, ConfSeen(shard, [*old, 6])) is None
    sh = s.shard_map[shard]
    assert set(sh.voters) == {*old, 6} and sh.next_step == 0
    assert [st_.kind.value for st_ in sh.steps][-1] == "remove_voter"
    check_plan(sh.voters, sh.target, sh.steps)
    assert apply(s, ConfSeen(shard, [1, 1])) is not None  # nonsense is refused


def test_fewer_nodes_than_rf_and_meta_voters_odd() -> None:
    s = _cluster(2, shards=4)
    assert all(len(sh.voters) == 2 for sh in s.shard_map.values())
    assert s.meta_voters == [1]
    apply(s, Join(3, "x:3"))
    assert s.meta_voters == [1, 2, 3]
    for i in range(4, 9):
        apply(s, Join(i, f"x:{i}"))
    assert s.meta_voters == [1, 2, 3, 4, 5]


commands = st.one_of(
    st.builds(Join, st.integers(1, 9), st.just("h:1"), st.integers(1, 2)),
    st.builds(Decommission, st.integers(1, 9)),
    st.builds(MarkDown, st.integers(1, 9), st.integers(0, 100)),
    st.builds(MarkUp, st.integers(1, 9), st.integers(0, 100)),
    st.builds(Evict, st.integers(1, 9)),
    st.builds(StepDone, st.integers(0, 7), st.integers(0, 6)),
    st.builds(LeaderSeen, st.integers(0, 7), st.integers(1, 9), st.integers(0, 5)),
    st.builds(
        ConfSeen,
        st.integers(0, 7),
        st.lists(st.integers(1, 9), min_size=1, max_size=4, unique=True),
        st.lists(st.integers(1, 9), max_size=1, unique=True),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(commands, max_size=40), st.integers(0, 2**32))
def test_replicas_apply_the_same_log_to_the_same_bytes(cmds: list[Command], seed: int) -> None:
    a, b = _cluster(4, shards=8), _cluster(4, shards=8)
    rng = random.Random(seed)
    for c in cmds:
        # b gets every command through the wire encoding, and restarts from bytes sometimes
        assert apply(a, c) == apply(b, decode_command(encode_command(c)))
        if rng.random() < 0.2:
            b = decode_state(encode_state(b))
        assert encode_state(a) == encode_state(b)
        for sh in a.shard_map.values():
            assert len(sh.voters) >= 1
            if sh.moving and not sh.blocked and sh.next_step == 0:
                check_plan(sh.voters, sh.target, sh.steps, learners=sh.learners, down=a.down())


@settings(max_examples=100, deadline=None)
@given(st.lists(commands, max_size=30))
def test_finishing_every_move_reaches_the_ring_placement(cmds: list[Command]) -> None:
    """Whatever happened before, once the executor finishes every move the shard map is
    the ring's placement of the members in the ring (shards without a live quorum
    excepted: they wait, blocked)."""
    s = _cluster(4, shards=8)
    for c in cmds:
        apply(s, c)
    for _ in range(20):  # a move finishing can let a decommissioned member go
        if not any(not sh.blocked for sh in s.movements().values()):
            break
        for shard, sh in sorted(s.movements().items()):
            if not sh.blocked:
                while s.shard_map[shard].moving:
                    assert apply(s, StepDone(shard, s.shard_map[shard].next_step)) is None
    want = Ring(s.ring_members(), s.vnodes).place(s.shards, s.replication)
    for shard, sh in s.shard_map.items():
        if not sh.blocked:
            assert set(sh.voters) == set(want.replicas[shard]) and not sh.learners
        else:
            assert "majority" in sh.blocked and not sh.steps
