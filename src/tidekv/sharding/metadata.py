"""The cluster metadata: a pure, deterministic state machine to replicate in its own group.

The state (:class:`ClusterState`) holds the members (address, weight, lifecycle state,
liveness), the ring parameters (shards, replication factor, vnodes per weight), every
shard's replicas and the move in progress (target and steps, from
:mod:`tidekv.sharding.movement`), the leaders seen, and the metadata group's own voters.
:func:`apply` applies one :data:`Command`; it is a pure function of the state and the
command (time comes *in* the command, as ``at``), validates everything first and changes
nothing when it refuses (the returned error says why), so every replica of the metadata
group that applies the same commands holds the same state, byte for byte
(:func:`encode_state`).

Commands::

    Create(cluster_id, shards, replication, vnodes, members)   once, on a fresh state
    Join(node, address, weight, raft_address)  a new member: the ring changes, shards move to it
    Decommission(node)                   out of the ring; REMOVED once it holds nothing
    MarkDown(node, at) / MarkUp(node, at)  what the failure detector saw (at: its clock)
    Evict(node)                          a long-down node leaves the ring (re-replication)
    StepDone(shard, index)               the executor finished step ``index`` of a move
    LeaderSeen(shard, node, term)        a shard leader was observed
    ConfSeen(shard, voters, learners)    a shard's real configuration differs from the
                                         record (a step done but not reported before a
                                         re-plan): the record follows, the move re-plans

Member states: ACTIVE (in the ring) -> DECOMMISSIONING (out of the ring, still holding
replicas) -> REMOVED; ACTIVE -> EVICTED (down for longer than the re-replication delay;
out of the ring) -> ACTIVE again when it comes back up (the ring moves its share back).
A node that is down but not evicted stays in the ring: a short outage moves nothing.

Re-replication is the pure :func:`evictions`: given the state, the current time and the
delay, the ``Evict`` commands the metadata leader should propose (none while the ring
would keep fewer members than the replication factor: nowhere to re-create replicas).

The metadata group's voters are chosen by :func:`choose_meta_voters`: the largest odd
number up to 5 of ACTIVE members, keeping the current ones (no needless churn), then
adding live members by id.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import msgspec

from tidekv.sharding.keys import check_shards
from tidekv.sharding.movement import NoQuorum, Step, StepKind, plan_shard
from tidekv.sharding.ring import DEFAULT_REPLICATION, DEFAULT_VNODES, Ring

__all__ = [
    "MAX_META_VOTERS",
    "ClusterState",
    "Command",
    "ConfSeen",
    "Create",
    "Decommission",
    "Evict",
    "Join",
    "LeaderSeen",
    "MarkDown",
    "MarkUp",
    "Member",
    "MemberState",
    "SeenLeader",
    "ShardState",
    "StepDone",
    "apply",
    "choose_meta_voters",
    "decode_command",
    "decode_state",
    "encode_command",
    "encode_state",
    "evictions",
]

MAX_META_VOTERS = 5


class MemberState(enum.Enum):
    ACTIVE = "active"
    DECOMMISSIONING = "decommissioning"
    EVICTED = "evicted"
    REMOVED = "removed"


class Member(msgspec.Struct):
    id: int
    address: str
    weight: int = 1
    state: MemberState = MemberState.ACTIVE
    live: bool = True
    down_since: int | None = None
    #: the peer (Raft) address of a member that joined ("": the one it was created with)
    raft_address: str = ""


class ShardState(msgspec.Struct):
    voters: list[int]
    learners: list[int] = msgspec.field(default_factory=list)
    #: the replica set being moved to (empty: no move in progress)
    target: list[int] = msgspec.field(default_factory=list)
    steps: list[Step] = msgspec.field(default_factory=list)
    next_step: int = 0
    #: why the move cannot proceed (no live quorum), else ""
    blocked: str = ""

    @property
    def moving(self) -> bool:
        return bool(self.target)


class SeenLeader(msgspec.Struct, array_like=True):
    node: int
    term: int


class ClusterState(msgspec.Struct):
    cluster_id: str = ""
    shards: int = 0
    replication: int = DEFAULT_REPLICATION
    vnodes: int = DEFAULT_VNODES
    members: dict[int, Member] = msgspec.field(default_factory=dict)
    shard_map: dict[int, ShardState] = msgspec.field(default_factory=dict)
    leaders: dict[int, SeenLeader] = msgspec.field(default_factory=dict)
    meta_voters: list[int] = msgspec.field(default_factory=list)
    #: commands applied so far
    revision: int = 0

    def ring_members(self) -> dict[int, int]:
        return {m.id: m.weight for m in self.members.values() if m.state is MemberState.ACTIVE}

    def down(self) -> set[int]:
        return {m.id for m in self.members.values() if not m.live}

    def movements(self) -> dict[int, ShardState]:
        return {s: st for s, st in self.shard_map.items() if st.moving}


# -- commands --------------------------------------------------------------------------


class Create(msgspec.Struct, tag=True):
    cluster_id: str
    shards: int
    members: list[tuple[int, str, int]]  # (id, address, weight)
    replication: int = DEFAULT_REPLICATION
    vnodes: int = DEFAULT_VNODES


class Join(msgspec.Struct, tag=True):
    node: int
    address: str
    weight: int = 1
    raft_address: str = ""


class Decommission(msgspec.Struct, tag=True):
    node: int


class MarkDown(msgspec.Struct, tag=True):
    node: int
    at: int


class MarkUp(msgspec.Struct, tag=True):
    node: int
    at: int


class Evict(msgspec.Struct, tag=True):
    node: int


class StepDone(msgspec.Struct, tag=True):
    shard: int
    index: int


class LeaderSeen(msgspec.Struct, tag=True):
    shard: int
    node: int
    term: int


class ConfSeen(msgspec.Struct, tag=True):
    """A shard leader's applied configuration (nodes), when it differs from the record."""

    shard: int
    voters: list[int]
    learners: list[int] = msgspec.field(default_factory=list)


Command: TypeAlias = (
    Create | Join | Decommission | MarkDown | MarkUp | Evict | StepDone | LeaderSeen | ConfSeen
)

_cmd_enc = msgspec.msgpack.Encoder()
_cmd_dec = msgspec.msgpack.Decoder(Command)
_state_enc = msgspec.msgpack.Encoder()
_state_dec = msgspec.msgpack.Decoder(ClusterState)


def encode_command(c: Command) -> bytes:
    return _cmd_enc.encode(c)


def decode_command(b: bytes) -> Command:
    return _cmd_dec.decode(b)


def encode_state(s: ClusterState) -> bytes:
    return _state_enc.encode(s)


def decode_state(b: bytes) -> ClusterState:
    return _state_dec.decode(b)


# -- apply -----------------------------------------------------------------------------


class Refused(ValueError):
    """A command that cannot apply to this state (nothing was changed)."""


def apply(state: ClusterState, cmd: Command) -> str | None:
    """Apply ``cmd`` to ``state`` in place; returns None, or the reason it was refused
    (then ``state`` is unchanged)."""
    try:
        if isinstance(cmd, Create):
            _create(state, cmd)
        elif isinstance(cmd, Join):
            _join(state, cmd)
        elif isinstance(cmd, Decommission):
            _decommission(state, cmd)
        elif isinstance(cmd, MarkDown):
            _mark_down(state, cmd)
        elif isinstance(cmd, MarkUp):
            _mark_up(state, cmd)
        elif isinstance(cmd, Evict):
            _evict(state, cmd)
        elif isinstance(cmd, StepDone):
            _step_done(state, cmd)
        elif isinstance(cmd, ConfSeen):
            _conf_seen(state, cmd)
        else:
            _leader_seen(state, cmd)
    except Refused as e:
        return str(e)
    state.revision += 1
    return None


def _member(state: ClusterState, node: int) -> Member:
    m = state.members.get(node)
    if m is None or m.state is MemberState.REMOVED:
        raise Refused(f"node {node} is not a member")
    return m


def _check_weight(weight: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 64:
        raise Refused(f"weight must be an integer in 1..64: {weight!r}")


def _create(state: ClusterState, c: Create) -> None:
    if state.shards:
        raise Refused("the cluster already exists")
    try:
        check_shards(c.shards)
        ring = Ring({i: w for i, _, w in c.members}, c.vnodes)
    except ValueError as e:
        raise Refused(str(e)) from None
    if not c.members or len({i for i, _, _ in c.members}) != len(c.members):
        raise Refused("members must be non-empty and distinct")
    if not 1 <= c.replication <= 7:
        raise Refused(f"the replication factor must be in 1..7: {c.replication}")
    placement = ring.place(c.shards, c.replication)
    state.cluster_id = c.cluster_id
    state.shards = c.shards
    state.replication = c.replication
    state.vnodes = c.vnodes
    state.members = {i: Member(i, a, w) for i, a, w in sorted(c.members)}
    state.shard_map = {s: ShardState(list(r)) for s, r in enumerate(placement.replicas)}
    _replan(state)


def _join(state: ClusterState, c: Join) -> None:
    _need_cluster(state)
    _check_weight(c.weight)
    if isinstance(c.node, bool) or not isinstance(c.node, int) or c.node <= 0:
        raise Refused(f"a node id must be a positive integer: {c.node!r}")
    old = state.members.get(c.node)
    if old is not None and old.state is not MemberState.REMOVED:
        raise Refused(f"node {c.node} is already a member ({old.state.value})")
    state.members[c.node] = Member(c.node, c.address, c.weight, raft_address=c.raft_address)
    _replan(state)


def _decommission(state: ClusterState, c: Decommission) -> None:
    _need_cluster(state)
    m = _member(state, c.node)
    if m.state is MemberState.DECOMMISSIONING:
        raise Refused(f"node {c.node} is already being decommissioned")
    if [n for n in state.ring_members() if n != c.node] == []:
        raise Refused(f"node {c.node} is the last member in the ring")
    m.state = MemberState.DECOMMISSIONING
    _replan(state)


def _mark_down(state: ClusterState, c: MarkDown) -> None:
    m = _member(state, c.node)
    if not m.live:
        raise Refused(f"node {c.node} is already down")
    m.live = False
    m.down_since = c.at
    _replan(state)


def _mark_up(state: ClusterState, c: MarkUp) -> None:
    m = _member(state, c.node)
    if m.live:
        raise Refused(f"node {c.node} is already up")
    m.live = True
    m.down_since = None
    if m.state is MemberState.EVICTED:
        m.state = MemberState.ACTIVE
    _replan(state)


def _evict(state: ClusterState, c: Evict) -> None:
    m = _member(state, c.node)
    if m.live:
        raise Refused(f"node {c.node} is up; only a down node is evicted")
    if m.state is not MemberState.ACTIVE:
        raise Refused(f"node {c.node} is {m.state.value}, not active")
    if [n for n in state.ring_members() if n != c.node] == []:
        raise Refused(f"node {c.node} is the last member in the ring")
    m.state = MemberState.EVICTED
    _replan(state)


def _step_done(state: ClusterState, c: StepDone) -> None:
    st = state.shard_map.get(c.shard)
    if st is None:
        raise Refused(f"no shard {c.shard}")
    if not st.moving or c.index != st.next_step or c.index >= len(st.steps):
        raise Refused(f"shard {c.shard}: step {c.index} is not the next step")
    step = st.steps[c.index]
    seen = state.leaders.get(c.shard)
    k, n = step.kind, step.node
    if k is StepKind.ADD_LEARNER:
        st.learners.append(n)
    elif k is StepKind.PROMOTE:
        st.learners.remove(n)
        st.voters.append(n)
    elif k is StepKind.REMOVE_VOTER:
        st.voters.remove(n)
    elif k is StepKind.REMOVE_LEARNER:
        st.learners.remove(n)
    elif k is StepKind.TRANSFER_LEADER and seen is not None and seen.node == n:
        state.leaders[c.shard] = SeenLeader(step.to, seen.term)
    st.next_step += 1
    if st.next_step == len(st.steps):
        st.voters = list(st.target)
        st.learners = []
        st.target, st.steps, st.next_step, st.blocked = [], [], 0, ""
    _retire(state)


def _leader_seen(state: ClusterState, c: LeaderSeen) -> None:
    if c.shard not in state.shard_map:
        raise Refused(f"no shard {c.shard}")
    seen = state.leaders.get(c.shard)
    if seen is not None and c.term < seen.term:
        raise Refused(f"shard {c.shard}: term {c.term} is older than {seen.term}")
    state.leaders[c.shard] = SeenLeader(c.node, c.term)


def _conf_seen(state: ClusterState, c: ConfSeen) -> None:
    st = state.shard_map.get(c.shard)
    if st is None:
        raise Refused(f"no shard {c.shard}")
    if not c.voters or len(set(c.voters)) != len(c.voters) or set(c.voters) & set(c.learners):
        raise Refused(f"shard {c.shard}: bad configuration {c.voters} / {c.learners}")
    if set(c.voters) == set(st.voters) and set(c.learners) == set(st.learners):
        return
    # the group's own configuration is the truth: the record follows it, and the move
    # (if any) is planned again from there
    st.voters = list(c.voters)
    st.learners = [n for n in c.learners if n not in c.voters]
    st.next_step = 0
    _replan(state)


def _need_cluster(state: ClusterState) -> None:
    if not state.shards:
        raise Refused("the cluster has not been created")


def _replan(state: ClusterState) -> None:
    """Recompute the targets from the ring; (re)plan every shard whose target changed."""
    ring = Ring(state.ring_members(), state.vnodes)
    placement = ring.place(state.shards, state.replication)
    down = state.down()
    for s, want in enumerate(placement.replicas):
        st = state.shard_map[s]
        target = list(want)
        if st.moving and st.next_step > 0 and set(st.target) == set(target):
            continue  # the move under way already goes there (unstarted ones are re-planned
            # with the latest liveness and leaders)
        if set(st.voters) == set(target) and not st.learners:
            st.target, st.steps, st.next_step, st.blocked = [], [], 0, ""
            continue
        seen = state.leaders.get(s)
        try:
            steps = plan_shard(
                st.voters,
                target,
                learners=st.learners,
                leader=seen.node if seen is not None else None,
                down=down,
            )
            blocked = ""
        except NoQuorum as e:
            steps, blocked = [], str(e)
        st.target, st.steps, st.next_step, st.blocked = target, steps, 0, blocked
    state.meta_voters = choose_meta_voters(state)
    _retire(state)


def _retire(state: ClusterState) -> None:
    """A decommissioning member that holds no replica and is in no target is REMOVED."""
    busy = {n for st in state.shard_map.values() for n in (*st.voters, *st.learners, *st.target)}
    for m in state.members.values():
        if m.state is MemberState.DECOMMISSIONING and m.id not in busy:
            m.state = MemberState.REMOVED


def choose_meta_voters(state: ClusterState, max_voters: int = MAX_META_VOTERS) -> list[int]:
    """The metadata group's voters: the largest odd count <= ``max_voters`` of ACTIVE
    members; current voters stay, then live members by id, then the others by id."""
    active = sorted(m.id for m in state.members.values() if m.state is MemberState.ACTIVE)
    n = min(max_voters, len(active))
    if n and n % 2 == 0:
        n -= 1
    keep = [v for v in state.meta_voters if v in active][:n]
    live = [v for v in active if state.members[v].live and v not in keep]
    rest = [v for v in active if not state.members[v].live and v not in keep]
    return sorted((keep + live + rest)[:n])


def evictions(state: ClusterState, now: int, down_after: int) -> list[Evict]:
    """Members down for at least ``down_after`` (in the unit of ``at``) at ``now``: their
    replicas should be re-created elsewhere. Only while the ring keeps at least the
    replication factor (and one) of members without them: with no node to re-create a
    replica on, evicting would only take a voter out of each of its shards, and a shard
    that then loses another could not take the node back when it returns."""
    out: list[Evict] = []
    ring = set(state.ring_members())
    for m in sorted(state.members.values(), key=lambda m: m.id):
        if (
            m.state is MemberState.ACTIVE
            and not m.live
            and m.down_since is not None
            and now - m.down_since >= down_after
            and len(ring) > max(1, state.replication)
        ):
            out.append(Evict(m.id))
            ring.discard(m.id)
    return out
