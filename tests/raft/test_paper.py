"""One test per rule of the Raft paper (Ongaro & Ousterhout 2014) and of the thesis
extensions tidekv implements; each docstring names or quotes its rule."""

from __future__ import annotations

import random

import pytest

from tidekv.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InvalidConfig,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    RawNode,
    ReadOnlyOption,
    Role,
)

from .harness import Cluster

MT = MessageType


def node(
    nid: int = 1,
    voters: tuple[int, ...] = (1, 2, 3),
    terms: list[int] | None = None,
    term: int = 0,
    commit: int = 0,
    learners: tuple[int, ...] = (),
    **cfg: object,
) -> RawNode:
    """A node whose log holds entries of ``terms`` (index 1..n), at ``term``."""
    st = MemoryStorage(ConfState(frozenset(voters), frozenset(learners)))
    st.append([Entry(t, i, EntryKind.NORMAL, b"") for i, t in enumerate(terms or [], 1)])
    st.set_hard_state(HardState(term, 0, commit))
    return RawNode(Config(id=nid, rng=random.Random(nid), **cfg), st)  # type: ignore[arg-type]


def take(raw: RawNode) -> list[Message]:
    """Every message of the pending Ready (both kinds), after advancing it."""
    if not raw.has_ready():
        return []
    rd = raw.ready()
    st = raw.raft.log.storage
    assert isinstance(st, MemoryStorage)
    st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)
    raw.advance(rd)
    return rd.messages + rd.persisted_messages


def make_leader(raw: RawNode) -> None:
    """Make ``raw`` leader by feeding it the votes it asks for."""
    raw.campaign()
    for _ in range(2):  # pre-vote round, then vote round
        if raw.raft.role == Role.LEADER:
            break
        for m in take(raw):
            if m.type in (MT.PRE_VOTE, MT.VOTE):
                resp = MT.PRE_VOTE_RESP if m.type == MT.PRE_VOTE else MT.VOTE_RESP
                raw.step(Message(resp, to=raw.id, frm=m.to, term=m.term))
    assert raw.raft.role == Role.LEADER


# -- §5.1 terms -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_5_1_update_term_from_message(role: str) -> None:
    """§5.1: "If one server's current term is smaller than the other's, then it updates
    its current term to the larger value. If a candidate or leader discovers that its
    term is out of date, it immediately reverts to follower state." """
    raw = node(pre_vote=False)
    if role == "candidate":
        raw.campaign()
    elif role == "leader":
        make_leader(raw)
    raw.step(Message(MT.APP, to=1, frm=2, term=5, log_term=0, index=0))
    assert raw.raft.term == 5
    assert raw.raft.role == Role.FOLLOWER
    assert raw.raft.lead == 2


def test_5_1_reject_stale_term() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request." (and tells the stale leader the current term so it steps down)"""
    raw = node(term=3)
    take(raw)
    raw.step(Message(MT.APP, to=1, frm=2, term=2, log_term=0, index=0, entries=[Entry(2, 1)]))
    assert raw.raft.log.last_index() == 0
    (resp,) = take(raw)
    assert resp.type == MT.APP_RESP and resp.term == 3


# -- §5.2 leader election -------------------------------------------------------------------


def test_5_2_start_as_follower() -> None:
    """§5.2: "When servers start up, they begin as followers." """
    assert node().raft.role == Role.FOLLOWER


def test_5_2_leader_sends_heartbeats() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." """
    raw = node(heartbeat_tick=1)
    make_leader(raw)
    take(raw)
    raw.tick()
    msgs = take(raw)
    assert sorted((m.to, m.type) for m in msgs) == [(2, MT.HEARTBEAT), (3, MT.HEARTBEAT)]


def test_5_2_follower_starts_election_after_timeout() -> None:
    """§5.2: "If a follower receives no communication over a period of time called the
    election timeout ... it increments its current term and transitions to candidate
    state. It then votes for itself and issues RequestVote RPCs." """
    raw = node(pre_vote=False, election_tick=10)
    for _ in range(2 * 10):
        raw.tick()
    assert raw.raft.role == Role.CANDIDATE
    assert raw.raft.term == 1 and raw.raft.vote == 1
    msgs = take(raw)
    assert sorted((m.to, m.type, m.term) for m in msgs) == [(2, MT.VOTE, 1), (3, MT.VOTE, 1)]


def test_5_2_randomized_election_timeout() -> None:
    """§5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed
    interval" — here [election_tick, 2 * election_tick), drawn only from Config.rng, so
    the same seed gives the same timeouts."""
    seen = set()
    for seed in range(50):
        raw = RawNode(
            Config(id=1, rng=random.Random(seed), election_tick=10),
            MemoryStorage(ConfState(frozenset({1, 2, 3}))),
        )
        t = raw.raft.randomized_election_timeout
        assert 10 <= t < 20
        seen.add(t)
        again = RawNode(
            Config(id=1, rng=random.Random(seed), election_tick=10),
            MemoryStorage(ConfState(frozenset({1, 2, 3}))),
        )
        assert again.raft.randomized_election_timeout == t
    assert len(seen) > 5


def test_5_2_one_vote_per_term() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." """
    raw = node()
    raw.step(Message(MT.VOTE, to=1, frm=2, term=1, log_term=0, index=0))
    raw.step(Message(MT.VOTE, to=1, frm=3, term=1, log_term=0, index=0))
    raw.step(Message(MT.VOTE, to=1, frm=2, term=1, log_term=0, index=0))  # retry: ok
    resps = [(m.to, m.reject) for m in take(raw)]
    assert resps == [(2, False), (3, True), (2, False)]
    assert raw.raft.vote == 2


def test_5_2_candidate_wins_with_majority_and_loses_on_rejections() -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." A majority of rejections ends the
    candidacy."""
    raw = node(voters=(1, 2, 3, 4, 5), pre_vote=False)
    raw.campaign()
    raw.step(Message(MT.VOTE_RESP, to=1, frm=2, term=1))
    assert raw.raft.role == Role.CANDIDATE
    raw.step(Message(MT.VOTE_RESP, to=1, frm=3, term=1))
    assert raw.raft.role == Role.LEADER

    lose = node(voters=(1, 2, 3, 4, 5), pre_vote=False)
    lose.campaign()
    for nid in (2, 3, 4):
        lose.step(Message(MT.VOTE_RESP, to=1, frm=nid, term=1, reject=True))
    assert lose.raft.role == Role.FOLLOWER


def test_5_2_candidate_yields_to_leader_of_same_term() -> None:
    """§5.2: "If the leader's term ... is at least as large as the candidate's current
    term, then the candidate recognizes the leader as legitimate and returns to follower
    state." """
    raw = node(pre_vote=False)
    raw.campaign()
    raw.step(Message(MT.APP, to=1, frm=2, term=1, log_term=0, index=0))
    assert raw.raft.role == Role.FOLLOWER and raw.raft.lead == 2


def test_5_2_election_safety_random_runs() -> None:
    """§5.2 Election Safety: "at most one leader can be elected in a given term", over
    random runs with message loss and partitions."""
    for seed in range(15):
        rng = random.Random(seed)
        c = Cluster([1, 2, 3, 4, 5], seed=seed)
        leaders: dict[int, int] = {}
        for _ in range(150):
            if rng.random() < 0.1:
                ids = [1, 2, 3, 4, 5]
                rng.shuffle(ids)
                k = rng.randrange(1, 5)
                c.partition(ids[:k], ids[k:])
            elif rng.random() < 0.1:
                c.heal()
            for nid in c.nodes:
                c.tick(nid, rng.randrange(3))
            c.process_ready()
            for nid in c.nodes:
                q = c.queues[nid]
                rng.shuffle(q)
                c.queues[nid] = [m for m in q if rng.random() > 0.1]
            c.deliver()
            for n in c.nodes.values():
                r = n.raw.raft
                if r.role == Role.LEADER:
                    assert leaders.setdefault(r.term, n.id) == n.id, (seed, r.term)
        assert leaders, seed


# -- §5.3 log replication -------------------------------------------------------------------


def test_5_3_leader_commits_on_majority_and_followers_apply() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers ... Once a follower learns that a log
    entry is committed, it applies the entry to its local state machine." """
    c = Cluster([1, 2, 3, 4, 5])
    c.elect(1)
    c.partition([1, 2, 3], [4, 5])
    c.propose(1, b"x")
    c.stabilize()
    assert c.nodes[1].raw.raft.log.committed == 2
    assert c.applied_data(2) == [b"x"] and c.applied_data(4) == []
    c.heal()
    c.tick(1)
    c.stabilize()
    assert all(c.applied_data(i) == [b"x"] for i in c.nodes)


def test_5_3_consistency_check_rejects_mismatch() -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and
    term, then it refuses the new entries." """
    raw = node(terms=[1, 1], term=2)
    take(raw)
    raw.step(Message(MT.APP, to=1, frm=2, term=2, log_term=2, index=2, entries=[Entry(2, 3)]))
    (resp,) = take(raw)
    assert resp.reject and resp.index == 2
    assert raw.raft.log.last_index() == 2


def test_5_3_conflicting_entries_are_deleted() -> None:
    """§5.3 / Figure 2: "If an existing entry conflicts with a new one (same index but
    different terms), delete the existing entry and all that follow it." """
    raw = node(terms=[1, 1, 1, 1], term=2)
    take(raw)
    raw.step(Message(MT.APP, to=1, frm=2, term=2, log_term=1, index=1, entries=[Entry(2, 2)]))
    log = raw.raft.log
    assert log.last_index() == 2 and log.term(2) == 2
    (resp,) = take(raw)
    assert not resp.reject and resp.index == 2


def test_5_3_log_matching_duplicate_append_is_idempotent() -> None:
    """§5.3 Log Matching: entries already present (same index and term) are kept; a
    re-delivered AppendEntries changes nothing."""
    raw = node(terms=[1, 1, 1], term=1, commit=0)
    take(raw)
    app = Message(MT.APP, to=1, frm=2, term=1, log_term=1, index=1, entries=[Entry(1, 2)])
    raw.step(app)
    raw.step(app)
    assert raw.raft.log.last_index() == 3


def test_5_3_figure_7_followers_brought_in_line() -> None:
    """§5.3 / Figure 7: a new leader (term 8) brings every follower's log — missing
    entries (a, b), extra uncommitted entries (c, d), or both (e, f) — in line with its
    own, by backing up to the point of agreement and overwriting after it."""
    leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
    followers = {
        2: [1, 1, 1, 4, 4, 5, 5, 6, 6],  # (a)
        3: [1, 1, 1, 4],  # (b)
        4: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # (c)
        5: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  # (d)
        6: [1, 1, 1, 4, 4, 4, 4],  # (e)
        7: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  # (f)
    }
    c = Cluster(range(1, 8), pre_vote=False)
    for nid, terms in [(1, leader_log), *followers.items()]:
        st = MemoryStorage(c.conf)
        st.append([Entry(t, i, EntryKind.NORMAL, b"") for i, t in enumerate(terms, 1)])
        st.set_hard_state(HardState(7, 0, 0))
        c.add_node(nid, st)
    c.elect(1)
    assert c.nodes[1].raw.raft.term == 8
    want = c.log_of(1).split(":", 1)[1]
    for nid in range(2, 8):
        assert c.log_of(nid).split(":", 1)[1] == want, nid
    assert c.nodes[7].raw.raft.log.committed == 11


def test_5_3_fast_backtracking_uses_conflict_hint() -> None:
    """§5.3 ("the follower can include the term of the conflicting entry and the first
    index it stores for that term"): a follower with 100 divergent entries is repaired
    with a couple of probes, not one per entry."""
    st = MemoryStorage(ConfState(frozenset({1, 2, 3})))
    c = Cluster([1, 2, 3], pre_vote=False)
    st1 = MemoryStorage(c.conf)
    st1.append([Entry(1, 1), *[Entry(3, i) for i in range(2, 20)]])
    st1.set_hard_state(HardState(3, 0, 1))
    c.add_node(1, st1)
    st.append([Entry(1, 1), *[Entry(2, i) for i in range(2, 102)]])
    st.set_hard_state(HardState(2, 0, 1))
    c.add_node(2, st)
    c.campaign(1)
    msgs = c.stabilize()
    rejects = [m for m in msgs if m.type == MT.APP_RESP and m.reject and m.frm == 2]
    assert len(rejects) <= 2
    assert c.log_of(2) == c.log_of(1).replace("1:", "2:", 1)


# -- §5.4 safety ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log_term", "index", "granted"),
    [(2, 3, True), (2, 4, True), (2, 2, False), (1, 10, False), (3, 1, True)],
)
def test_5_4_1_election_restriction(log_term: int, index: int, granted: bool) -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of
    the candidate" (compare last terms, then lengths). Voter log: terms [1, 2, 2]."""
    raw = node(terms=[1, 2, 2], term=2)
    raw.step(Message(MT.VOTE, to=1, frm=2, term=3, log_term=log_term, index=index))
    (resp,) = take(raw)
    assert resp.reject == (not granted)


def test_5_4_2_leader_commits_only_own_term_by_counting() -> None:
    """§5.4.2 / Figure 8: "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by counting
    replicas; once an entry from the current term has been committed ... all prior
    entries are committed indirectly." """
    raw = node(terms=[1, 2], term=2, pre_vote=False)
    make_leader(raw)  # term 3, no-op at index 3
    take(raw)  # ... persisted
    # follower 2 acknowledges index 2 (an entry of term 2): a majority {1, 2} holds it
    raw.step(Message(MT.APP_RESP, to=1, frm=2, term=3, index=2))
    assert raw.raft.log.committed == 0
    raw.step(Message(MT.APP_RESP, to=1, frm=2, term=3, index=3))
    assert raw.raft.log.committed == 3


def test_5_4_2_new_leader_appends_noop() -> None:
    """§8 / §5.4.2: "each leader commit[s] a blank no-op entry into the log at the start
    of its term" (tidekv's EntryKind.NOOP)."""
    raw = node(terms=[1], term=1)
    make_leader(raw)
    e = raw.raft.log.slice(2, 3)[0]
    assert (e.term, e.kind) == (raw.raft.term, EntryKind.NOOP)


# -- persistence and the Ready contract -----------------------------------------------------


def test_ready_persist_before_send() -> None:
    """Figure 2 "updated on stable storage before responding to RPCs": answers about our
    log or vote are only in persisted_messages; a new term/vote holds every message."""
    raw = node(pre_vote=False)
    raw.campaign()
    rd = raw.ready()
    assert rd.hard_state == HardState(1, 1, 0)
    assert rd.messages == [] and len(rd.persisted_messages) == 2
    raw.advance(rd)

    f = node(nid=2)
    take(f)
    f.step(Message(MT.APP, to=2, frm=1, term=1, log_term=0, index=0, entries=[Entry(1, 1)]))
    rd = f.ready()
    assert [m.type for m in rd.persisted_messages] == [MT.APP_RESP]
    assert rd.entries == [Entry(1, 1)]


def test_leader_counts_itself_only_after_persisting() -> None:
    """The leader's own log counts for the commit quorum only once the driver persisted
    it (advance), so a committed entry is durable on a majority."""
    raw = node(pre_vote=False)
    make_leader(raw)
    rd = raw.ready()  # holds the no-op, not yet persisted
    raw.step(Message(MT.APP_RESP, to=1, frm=2, term=1, index=1))
    assert raw.raft.log.committed == 0
    st = raw.raft.log.storage
    assert isinstance(st, MemoryStorage)
    st.append(rd.entries)
    raw.advance(rd)
    assert raw.raft.log.committed == 1


def test_restart_recovers_hard_state_and_log() -> None:
    """Figure 2 persistent state (currentTerm, votedFor, log[]) survives a restart."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"a")
    c.stabilize()
    n = c.restart(2)
    r = n.raw.raft
    assert (r.term, r.vote, r.log.last_index(), r.log.committed) == (1, 1, 2, 2)
    c.stabilize()
    assert c.applied_data(2) == [b"a"]  # re-applied from the log


# -- replication flow control ---------------------------------------------------------------


def test_pipelining_bounded_by_inflight_window() -> None:
    """Pipelining: in replicate state the leader keeps at most max_inflight_msgs
    AppendEntries unacknowledged per follower, then waits."""
    c = Cluster([1, 2, 3], max_inflight_msgs=2, max_size_per_msg=1)
    c.elect(1)
    for i in range(5):
        c.propose(1, f"e{i}".encode())
    c.process_ready()
    apps = [m for m in c.queues[2] if m.type == MT.APP]
    assert len(apps) == 2 and all(len(m.entries) == 1 for m in apps)
    c.stabilize()
    assert c.applied_data(2) == [f"e{i}".encode() for i in range(5)]


def test_batching_respects_max_size_per_msg() -> None:
    """Batching: one AppendEntries carries as many entries as fit in max_size_per_msg."""
    c = Cluster([1, 2, 3], max_size_per_msg=3 * (100 + 16))
    c.elect(1)
    for _ in range(7):
        c.propose(1, bytes(100))
    c.process_ready()
    sizes = [len(m.entries) for m in c.queues[2] if m.type == MT.APP]
    assert sizes == [3, 3, 1]


def test_propose_without_leader_is_refused() -> None:
    raw = node()
    with pytest.raises(ProposalDropped):
        raw.propose(b"x")


# -- thesis §9.6 PreVote, §6.2 CheckQuorum ---------------------------------------------------


def test_prevote_does_not_bump_term() -> None:
    """Thesis §9.6: a pre-candidate asks whether it could win before incrementing its
    term; if it cannot, nobody's term changes."""
    raw = node()
    raw.campaign()
    assert raw.raft.role == Role.PRE_CANDIDATE and raw.raft.term == 0
    msgs = take(raw)
    assert {(m.type, m.term) for m in msgs} == {(MT.PRE_VOTE, 1)}
    for m in msgs:
        raw.step(Message(MT.PRE_VOTE_RESP, to=1, frm=m.to, term=0, reject=True))
    assert raw.raft.role == Role.FOLLOWER and raw.raft.term == 0


def test_leader_stickiness_ignores_votes_within_lease() -> None:
    """Thesis §4.2.3: "if a server receives a RequestVote request within the minimum
    election timeout of hearing from a current leader, it does not update its term or
    grant its vote." """
    raw = node(nid=2)
    raw.step(Message(MT.HEARTBEAT, to=2, frm=1, term=1))
    take(raw)
    raw.step(Message(MT.VOTE, to=2, frm=3, term=2, log_term=5, index=5))
    assert raw.raft.term == 1 and take(raw) == []
    for _ in range(10):
        raw.tick()
    raw.step(Message(MT.VOTE, to=2, frm=3, term=2, log_term=5, index=5))
    assert raw.raft.term == 2 and raw.raft.vote == 3


def test_check_quorum_leader_steps_down() -> None:
    """CheckQuorum (thesis §6.2): a leader that did not hear from a majority during an
    election timeout steps down."""
    raw = node(election_tick=10)
    make_leader(raw)
    raw.step(Message(MT.HEARTBEAT_RESP, to=1, frm=2, term=raw.raft.term))
    for _ in range(10):
        raw.tick()
    assert raw.raft.role == Role.LEADER  # heard from 2: {1, 2} is a majority
    for _ in range(10):
        raw.tick()
    assert raw.raft.role == Role.FOLLOWER


# -- thesis §3.10 leadership transfer -------------------------------------------------------


def test_leadership_transfer() -> None:
    """Thesis §3.10: the leader stops accepting proposals, catches the target up, sends
    TimeoutNow; the target campaigns at once and wins."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].raw.transfer_leader(3)
    with pytest.raises(ProposalDropped):
        c.propose(1, b"x")
    c.stabilize()
    assert c.leader() == 3 and c.nodes[3].raw.raft.term == 2


def test_leadership_transfer_forwarded_from_follower() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[2].raw.transfer_leader(2)
    c.stabilize()
    assert c.leader() == 2


def test_leadership_transfer_aborts_after_election_timeout() -> None:
    """Thesis §3.10: "If the transfer does not complete within an election timeout, the
    prior leader aborts the transfer and resumes accepting client requests." """
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    c.nodes[1].raw.transfer_leader(3)
    c.tick(1, 9)
    assert c.nodes[1].raw.raft.lead_transferee == 3
    c.tick(1, 1)
    assert c.nodes[1].raw.raft.lead_transferee == 0
    c.propose(1, b"ok")  # accepted again


# -- membership -----------------------------------------------------------------------------


def test_learner_receives_log_but_does_not_vote_or_count() -> None:
    """Thesis §4.2.1: learners ("non-voting members") receive the log but are not
    counted for commitment or elections."""
    c = Cluster([1, 2, 3], learners=[4])
    c.elect(1)
    c.partition([1, 4], [2, 3])
    c.propose(1, b"x")
    c.stabilize()
    assert c.nodes[1].raw.raft.log.committed == 1  # {1, 4} is not a quorum of {1, 2, 3}
    c.heal()
    c.tick(1)
    c.stabilize()
    assert c.applied_data(4) == [b"x"]
    c.tick_election(4)
    assert c.nodes[4].raw.raft.role == Role.FOLLOWER and c.nodes[4].raw.raft.term == 1


def test_conf_change_one_at_a_time_and_after_own_term_commit() -> None:
    """Thesis §4.1 + errata: a leader proposes a change only after committing an entry
    of its term, and only one change may be pending at a time."""
    raw = node(pre_vote=False)
    make_leader(raw)
    with pytest.raises(ProposalDropped):  # no-op of its term not applied yet
        raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.conf_change(1, ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped):
        c.conf_change(1, ConfChange(ConfChangeType.ADD_VOTER, 4))
    c.stabilize()
    c.conf_change(1, ConfChange(ConfChangeType.ADD_VOTER, 5))  # the first one applied


def test_add_voter_changes_quorum() -> None:
    """After adding a fourth voter, a commit needs 3 acknowledgements."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.add_node(4)
    c.conf_change(1, ConfChange(ConfChangeType.ADD_VOTER, 4))
    c.stabilize()
    assert c.nodes[1].raw.raft.voters == {1, 2, 3, 4}
    c.partition([1, 2], [3, 4])
    c.propose(1, b"x")
    c.stabilize()
    assert c.nodes[1].raw.raft.log.committed == 2  # "x" at 3 is only on {1, 2}
    c.heal()
    c.tick(1)
    c.stabilize()
    assert c.applied_data(4) == [b"x"]


def test_removed_leader_steps_down() -> None:
    """A leader that applies its own removal steps down; the rest elect a new leader."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.conf_change(1, ConfChange(ConfChangeType.REMOVE_NODE, 1))
    c.stabilize()
    assert c.nodes[1].raw.raft.role == Role.FOLLOWER
    assert c.nodes[2].raw.raft.voters == {2, 3}
    ld = c.run_until_leader()
    assert ld in (2, 3)
    c.propose(ld, b"after")
    c.stabilize()
    assert c.applied_data(2) == [b"after"] and c.applied_data(3) == [b"after"]


# -- reads (thesis §6.4) --------------------------------------------------------------------


def test_read_index_waits_for_own_term_commit() -> None:
    """Thesis §6.4 step 1: a new leader answers a ReadIndex only after its no-op (an
    entry of its term) committed, because only then is its commit index current."""
    c = Cluster([1, 2, 3])
    c.campaign(1)
    # deliver the election, but not the no-op's acks
    for _ in range(4):
        c.process_ready()
        c.deliver()
    assert c.nodes[1].raw.raft.role == Role.LEADER
    c.nodes[1].raw.read_index(b"r")
    c.process_ready()
    assert c.nodes[1].read_states == []
    c.stabilize()
    assert [(s.request_ctx, s.index) for s in c.nodes[1].read_states] == [(b"r", 1)]


def test_read_index_batches_into_one_heartbeat_round() -> None:
    """Many reads queued while a round is in flight share the next round: 100 reads cost
    two heartbeat rounds, not 100."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    for i in range(100):
        c.nodes[1].raw.read_index(str(i).encode())
    msgs = c.stabilize()
    assert sum(m.type == MT.HEARTBEAT for m in msgs) == 4  # 2 rounds x 2 peers
    assert len(c.nodes[1].read_states) == 100


def test_follower_read_index() -> None:
    """Follower reads (thesis §6.4): a follower asks the leader for its read index and
    serves the read locally once it applied that far."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"a")
    c.stabilize()
    c.nodes[3].raw.read_index(b"f")
    msgs = c.stabilize()
    assert [s.index for s in c.nodes[3].read_states] == [2]
    assert any(m.type == MT.READ_INDEX_RESP and m.to == 3 for m in msgs)


def test_lease_read_needs_check_quorum() -> None:
    with pytest.raises(InvalidConfig):
        node(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=False)


def test_lease_read_answers_without_round_trip_then_expires() -> None:
    """Thesis §6.4.1: within the lease the leader answers from its commit index with no
    messages; after (election timeout - drift) ticks without acks it runs a ReadIndex
    round instead."""
    c = Cluster([1, 2, 3], read_only_option=ReadOnlyOption.LEASE_BASED)
    c.elect(1)
    c.tick(1)
    c.stabilize()
    c.nodes[1].raw.read_index(b"lease")
    rd = c.nodes[1].raw.ready()
    assert [s.request_ctx for s in rd.read_states] == [b"lease"] and not rd.messages
    c.nodes[1].raw.advance(rd)
    c.isolate(1)
    c.tick(1, 9)
    c.process_ready()
    c.nodes[1].raw.read_index(b"slow")
    rd = c.nodes[1].raw.ready()
    assert rd.read_states == []
    assert any(m.type == MT.HEARTBEAT and m.context for m in rd.messages)


# -- snapshots (§7) -------------------------------------------------------------------------


def test_7_snapshot_install_for_lagging_follower() -> None:
    """§7: "the leader must occasionally send snapshots to followers that lag behind ...
    when the leader has already discarded the next log entry that it needs to send." """
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    for i in range(5):
        c.propose(1, f"v{i}".encode())
    c.stabilize()
    c.compact(1, 6)
    c.heal()
    c.tick(1)
    msgs = c.stabilize()
    assert any(m.type == MT.SNAP and m.to == 3 for m in msgs)
    assert c.applied_data(3) == [f"v{i}".encode() for i in range(5)]
    assert c.nodes[3].raw.raft.log.first_index() == 7
    c.propose(1, b"after")
    c.stabilize()
    assert c.applied_data(3)[-1] == b"after"


def test_7_snapshot_failure_reverts_to_probe() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"a")
    c.stabilize()
    c.compact(1, 2)
    c.heal()
    c.propose(1, b"b")
    c.process_ready()
    c.deliver(3)
    c.process_ready()
    c.deliver(1)
    c.process_ready()
    pr = c.nodes[1].raw.raft.prs[3]
    assert pr.state == ProgressState.SNAPSHOT
    c.drop(3)
    c.nodes[1].raw.report_snapshot(3, ok=False)
    assert pr.state == ProgressState.PROBE
    c.tick(1)
    c.stabilize()
    assert c.applied_data(3) == [b"a", b"b"]


def test_follower_ignores_older_snapshot() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"a")
    c.stabilize()
    c.compact(1, 2)
    snap = c.nodes[1].storage.snapshot()
    before = c.nodes[2].raw.raft.log.last_index()
    c.nodes[2].raw.step(Message(MT.SNAP, to=2, frm=1, term=1, snapshot=snap))
    assert c.nodes[2].raw.raft.log.last_index() == before
