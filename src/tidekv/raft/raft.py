"""The Raft state machine (Ongaro & Ousterhout; Ongaro's thesis ch. 3, 4, 6, 9).

Structure follows etcd's ``raft.go``: :meth:`Raft.step` checks the message term once
(§5.1), handles votes, and hands everything else to ``self._step``, which
``become_follower`` / ``become_pre_candidate`` / ``become_candidate`` / ``become_leader``
swap in together with the matching ``self._tick``. Ticks only count and turn timeouts
into local messages fed back through ``step``. Side effects are queued in ``msgs`` and
collected by :class:`~tidekv.raft.rawnode.RawNode` into a ``Ready``; storage is only read.

Membership changes: one server at a time
----------------------------------------
tidekv changes membership one voter (or learner) at a time (thesis §4.1), not with joint
consensus. Any majority of a configuration and any majority of a configuration that
differs by one voter intersect, so the two can never elect two leaders in one term. The
known hole of single-server changes (a leader of a new term overwriting an uncommitted
change, Ongaro, raft-dev 2015) is closed by the rule the thesis errata adds: a leader
proposes a change only after an entry of its own term is committed and applied
(``pending_conf_index`` starts at the leader's no-op), and only one change may be
pending at a time (a new one is refused until the previous one is applied). A change
takes effect when the driver applies the committed entry and calls ``apply_conf_change``
(as in etcd). We chose this over joint consensus because every change tidekv needs
(add a learner, promote it, remove a node, replace a node as add-then-remove) is a
single-server step, and the code and its tests are much smaller; :mod:`quorum` keeps
the joint functions so the switch would be local.

Learners receive the log but never vote, never campaign and never count for commit.
A leader that applies its own removal steps down (``Config.step_down_on_removal``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from tidekv.raft import quorum
from tidekv.raft.config import Config, ReadOnlyOption
from tidekv.raft.errors import CompactedError, ProposalDropped, SnapshotTemporarilyUnavailable
from tidekv.raft.log import RaftLog
from tidekv.raft.progress import Progress, ProgressState
from tidekv.raft.read_only import ReadOnly
from tidekv.raft.storage import Storage
from tidekv.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    decode_conf_change,
)

MT = MessageType

CAMPAIGN_TRANSFER = b"transfer"
"""Context of a Vote sent because of TimeoutNow: voters ignore their leader lease."""

QUIESCE_CONTEXT = b"quiesce"
"""Context of the leader's last heartbeat before it quiesces: the follower stops its
election timer. (ReadIndex rounds use 8-byte contexts, so the two never collide.)"""

WAKE_CONTEXT = b"wake"
"""Context of a HEARTBEAT_RESP a follower sends to wake its quiesced leader."""

_READ_ROUND_CONTEXT_LEN = 8


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class Raft:
    """One node's Raft state. Use it through :class:`~tidekv.raft.rawnode.RawNode`."""

    def __init__(self, cfg: Config, storage: Storage) -> None:
        cfg.validate()
        self.cfg = cfg
        self.id = cfg.id
        self.rng = cfg.rng
        self.log = RaftLog(storage)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.voters: frozenset[int] = frozenset()
        self.learners: frozenset[int] = frozenset()
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_timeout = cfg.election_tick
        self.heartbeat_timeout = cfg.heartbeat_tick
        self.randomized_election_timeout = cfg.election_tick
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.clock = 0
        """Ticks since start; the leader measures its lease with it."""
        self.lead_transferee = NONE
        self.timeout_now_term = 0
        """The last term in which this node, as leader, sent TimeoutNow (no lease after)."""
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_reads: list[Message] = []
        """ReadIndex requests held until the leader commits an entry of its term."""
        self.lease_acks: dict[int, int] = {}
        """Per voter: the send tick of the latest heartbeat it acknowledged."""
        self.needs_bcast = False
        self.quiesced = False
        """Idle: no ticks (the driver may skip them); see :meth:`maybe_quiesce`."""
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election

        hs, cs = storage.initial_state()
        self._apply_conf_state(cs)
        if hs != HardState():
            self._load_hard_state(hs)
        if cfg.applied > 0:
            self.log.applied_to(cfg.applied)
        self.become_follower(self.term, NONE)

    # -- state --------------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _load_hard_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise AssertionError(
                f"hard state commit {hs.commit} out of range "
                f"[{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def promotable(self) -> bool:
        return self.id in self.voters

    def _apply_conf_state(self, cs: ConfState) -> None:
        """Make the voters/learners and the progress map match ``cs``."""
        self.voters = cs.voters
        self.learners = cs.learners
        nxt = self.log.last_index() + 1
        members = cs.voters | cs.learners
        for nid in list(self.prs):
            if nid not in members:
                del self.prs[nid]
        for nid in members:
            pr = self.prs.get(nid)
            if pr is None:
                pr = Progress(nxt, self.cfg.max_inflight_msgs)
                self.prs[nid] = pr
            pr.is_learner = nid in cs.learners
        for nid in list(self.lease_acks):
            if nid not in cs.voters:
                del self.lease_acks[nid]

    # -- sending --------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        self.msgs.append(m)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send the next AppendEntries (or a snapshot) to ``to``; False if nothing sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        ents: list[Entry] | None
        try:
            ents = log.entries_from(pr.next, self.cfg.max_size_per_msg)
        except CompactedError:
            ents = None
        if ents is not None and not ents and not send_if_empty:
            return False
        if prev_term is None or ents is None:
            return self._send_snapshot(to, pr)
        self.msgs.append(
            Message(
                MT.APP,
                to,
                self.id,
                self.term,
                prev_term,
                prev,
                ents,
                log.committed,
            )
        )
        if ents:
            pr.sent_entries(len(ents), ents[-1].index)
        else:
            pr.sent_entries(0, prev)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty:
            raise AssertionError("need a non-empty snapshot to send")
        pr.become_snapshot(snap.meta.index)
        self.send(Message(MT.SNAP, to=to, frm=self.id, term=self.term, snapshot=snap))
        return True

    def _send_heartbeat(self, to: int, ctx: bytes) -> None:
        # the commit is capped at the follower's match: it may not have later entries
        commit = min(self.prs[to].match, self.log.committed)
        self.send(
            Message(
                MT.HEARTBEAT,
                to=to,
                frm=self.id,
                term=self.term,
                commit=commit,
                index=self.clock,
                context=ctx,
            )
        )

    def bcast_append(self) -> None:
        self.needs_bcast = False
        for nid in self.prs:
            if nid != self.id:
                self._send_append(nid)

    def flush_appends(self) -> None:
        """Send the appends deferred by proposals (one batch per follower)."""
        if self.needs_bcast:
            self.needs_bcast = False
            if self.role == Role.LEADER:
                for nid in self.prs:
                    if nid != self.id:
                        while self._send_append(nid, send_if_empty=False):
                            pass

    def bcast_heartbeat(self, ctx: bytes = b"") -> None:
        for nid in self.prs:
            if nid != self.id:
                self._send_heartbeat(nid, ctx)

    # -- role changes ---------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.votes = {}
        last = self.log.last_index()
        for nid, pr in self.prs.items():
            learner = pr.is_learner
            npr = Progress(last + 1, self.cfg.max_inflight_msgs, learner)
            if nid == self.id:
                npr.match = self.log.persisted_last()
            self.prs[nid] = npr
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_reads = []
        self.lease_acks = {}
        self.needs_bcast = False
        self.quiesced = False

    def _reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._tick = self._tick_election
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("invalid transition leader -> pre-candidate")
        # Neither the term nor the vote changes (thesis §9.6).
        self.quiesced = False
        self._step = self._step_candidate
        self._tick = self._tick_election
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("invalid transition leader -> candidate")
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise AssertionError("invalid transition follower -> leader")
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.prs[self.id].become_replicate()
        # §5.4.2 / §8: the no-op lets the leader commit, hence learn, the commit index.
        li = self.log.last_index()
        self.log.append([Entry(self.term, li + 1, EntryKind.NOOP)])
        # No conf change until this no-op (an entry of this term) is applied: the fix for
        # single-server changes (see the module docstring).
        self.pending_conf_index = li + 1
        self.lease_acks = {self.id: self.clock}

    # -- ticks ----------------------------------------------------------------------------

    def tick(self) -> None:
        if self.quiesced:
            return  # a quiesced node's time stands still (the driver may skip the call)
        self.clock += 1
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, frm=self.id))
            # a transfer that did not finish within an election timeout is abandoned
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            if self.cfg.quiesce and self._can_quiesce():
                self._quiesce()
            else:
                self.step(Message(MT.BEAT, frm=self.id))

    # -- quiescence -----------------------------------------------------------------------

    def _can_quiesce(self) -> bool:
        """Nothing to do: no pending proposal, read, transfer or conf change, everything
        committed and applied here, and every member holds the whole log, is known to
        answer, and is caught up (the quiesce heartbeat tells it the commit index)."""
        log = self.log
        last = log.last_index()
        if (
            self.role != Role.LEADER
            or self.lead_transferee != NONE
            or self.pending_reads
            or self.read_only.has_pending()
            or self.read_only.rounds
            or self.needs_bcast
            or log.unstable
            or log.committed != last
            or log.applied != last
            or self.pending_conf_index > log.applied
            or log.term(last) != self.term
        ):
            return False
        for nid, pr in self.prs.items():
            if pr.match != last:
                return False
            if nid != self.id and (not pr.recent_active or pr.state != ProgressState.REPLICATE):
                return False
        return True

    def _quiesce(self) -> None:
        self.quiesced = True
        self.bcast_heartbeat(QUIESCE_CONTEXT)

    def unquiesce(self, wake_leader: bool = False) -> None:
        """Resume ticking. A leader restarts its timers, forgets its lease (its clock
        stood still: see the docs' quiescence section) and heartbeats at once; a follower
        restarts its election timer and, with ``wake_leader``, asks its leader to wake."""
        if not self.quiesced:
            return
        self.quiesced = False
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # Every heartbeat sent before this point carries a clock value at least an
        # election timeout old from now on, so no ack of one can validate a lease: the
        # lease is earned again by a heartbeat sent after waking.
        self.clock += self.election_timeout
        if self.role == Role.LEADER:
            self.lease_acks = {self.id: self.clock}
            for pr in self.prs.values():
                pr.recent_active = True  # a full election timeout for them to answer
            self.bcast_heartbeat()
        elif wake_leader and self.lead != NONE and self.lead != self.id:
            self.send(
                Message(
                    MT.HEARTBEAT_RESP, to=self.lead, frm=self.id, term=self.term,
                    context=WAKE_CONTEXT,
                )
            )  # fmt: skip

    # -- elections ------------------------------------------------------------------------

    def _has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        for e in self.log.next_committed(self.log.applied):
            if e.kind == EntryKind.CONF_CHANGE:
                return True
        return False

    def hup(self, transfer: bool = False) -> None:
        if self.role == Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            return
        if self.cfg.pre_vote and not transfer:
            self.campaign(pre=True)
        else:
            self.campaign(pre=False, transfer=transfer)

    def campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self.become_pre_candidate()
            vote_type = MT.PRE_VOTE
            term = self.term + 1  # the term we would campaign for; not adopted yet
        else:
            self.become_candidate()
            vote_type = MT.VOTE
            term = self.term
        if self._poll(self.id, True) == quorum.VoteResult.WON:
            # a single-voter cluster wins at once
            if pre:
                self.campaign(pre=False, transfer=transfer)
            else:
                self.become_leader()
            return
        last = self.log.last_index()
        last_term = self.log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for nid in sorted(self.voters):
            if nid == self.id:
                continue
            self.send(
                Message(
                    vote_type,
                    to=nid,
                    frm=self.id,
                    term=term,
                    log_term=last_term,
                    index=last,
                    context=ctx,
                )
            )

    def _poll(self, nid: int, granted: bool) -> quorum.VoteResult:
        self.votes.setdefault(nid, granted)
        return quorum.vote_result(self.voters, self.votes)

    # -- step -----------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message: the term checks of §5.1 first, then the role's handler."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # We heard from a leader within the election timeout: ignore the
                    # disruptive request without adopting its term (thesis §4.2.3).
                    # A quiesced node wakes (and wakes its leader): the candidate could
                    # not hear the silent leader, and heartbeats will bring it back.
                    if self.quiesced:
                        self.unquiesce(wake_leader=True)
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                # A pre-vote carries a future term; a granted pre-vote answer carries the
                # term we asked about. Neither changes our term.
                pass
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (
                MT.HEARTBEAT,
                MT.APP,
            ):
                # A stale leader (e.g. just healed from a partition) learns our term and
                # steps down; otherwise, with pre-vote, nothing would ever tell it.
                self.send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term))
            elif m.type == MT.PRE_VOTE:
                self.send(
                    Message(MT.PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True)
                )
            return

        t = m.type
        if t == MT.HUP:
            self.hup()
        elif t == MT.VOTE or t == MT.PRE_VOTE:
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _handle_vote_request(self, m: Message) -> None:
        # §5.2 one vote per term (first come first served), §5.4.1 election restriction.
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self.send(Message(resp, to=m.frm, frm=self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, to=m.frm, frm=self.id, term=self.term, reject=True))

    # -- leader ---------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if self.quiesced and not self._keeps_quiet(m):
            self.unquiesce()
        if t == MT.BEAT:
            self._beat()
            return
        if t == MT.CHECK_QUORUM:
            if not self._quorum_active():
                self.become_follower(self.term, NONE)
            for nid, pr in self.prs.items():
                if nid != self.id:
                    pr.recent_active = False
            return
        if t == MT.PROPOSE:
            self._leader_propose(m)
            return
        if t == MT.READ_INDEX:
            self._leader_read_index(m)
            return

        opr = self.prs.get(m.frm)
        if opr is None:
            return
        pr = opr
        if t == MT.APP_RESP:
            self._leader_app_resp(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            if m.context == WAKE_CONTEXT:
                return  # a wake-up call (handled above), not an ack of any heartbeat
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # the follower answers but no append ack came back: the window was lost
                # (dropped, partitioned). Free one slot so replication resumes; without
                # this the follower stalls until the next leader change.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.frm in self.voters:
                if m.index > self.lease_acks.get(m.frm, -1):
                    self.lease_acks[m.frm] = m.index
                if len(m.context) == _READ_ROUND_CONTEXT_LEN:
                    self.read_only.ack(m.frm, int.from_bytes(m.context, "big"))
                    self._release_confirmed_reads()
        elif t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # wait for an append response (or a heartbeat response) before probing
            pr.probe_sent = True
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.TRANSFER_LEADER:
            self._leader_transfer(m.frm, pr)

    def _keeps_quiet(self, m: Message) -> bool:
        """Messages a quiesced leader takes without waking: answers that change nothing."""
        t = m.type
        if t == MT.HEARTBEAT_RESP:
            return m.context != WAKE_CONTEXT
        if t == MT.APP_RESP:
            return not m.reject and m.index >= self.log.last_index()
        return t == MT.UNREACHABLE or t == MT.SNAP_STATUS

    def _beat(self) -> None:
        ro = self.read_only
        if ro.has_pending() and self._committed_current_term():
            self._start_read_round()
        elif ro.rounds:
            # re-send the newest round: its heartbeats may have been lost
            self.bcast_heartbeat(ro.last_round().to_bytes(8, "big"))
        else:
            self.bcast_heartbeat()

    def _quorum_active(self) -> bool:
        votes = {nid: (nid == self.id or pr.recent_active) for nid, pr in self.prs.items()}
        return quorum.vote_result(self.voters, votes) == quorum.VoteResult.WON

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise ProposalDropped("empty proposal")
        if self.id not in self.prs:
            raise ProposalDropped("this node was removed from the group")
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress", to=self.lead_transferee)
        for e in m.entries:
            if e.kind == EntryKind.CONF_CHANGE:
                self._check_conf_change(decode_conf_change(e.data))
        li = self.log.last_index()
        term = self.term
        ents = [Entry(term, li + i, e.kind, e.data) for i, e in enumerate(m.entries, 1)]
        for e in ents:
            if e.kind == EntryKind.CONF_CHANGE:
                self.pending_conf_index = e.index
        self.log.append(ents)
        self.needs_bcast = True

    def propose_fast(self, data: list[bytes]) -> int:
        """Leader hot path for NORMAL entries: no message object; returns the last index.

        ``log.offset + len(log.unstable)`` is always ``last_index() + 1``.
        """
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress", to=self.lead_transferee)
        if self.quiesced:
            self.unquiesce()
        log = self.log
        unstable = log.unstable
        start = log.offset + len(unstable)
        term = self.term
        normal = EntryKind.NORMAL
        if len(data) == 1:
            unstable.append(Entry(term, start, normal, data[0]))
        else:
            unstable.extend([Entry(term, i, normal, d) for i, d in enumerate(data, start)])
        self.needs_bcast = True
        return start + len(data) - 1

    def _check_conf_change(self, cc: ConfChange) -> None:
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(
                "a membership change is pending (or this leader has not applied an entry "
                "of its term yet)",
                pending_index=self.pending_conf_index,
                applied=self.log.applied,
            )
        if cc.type == ConfChangeType.REMOVE_NODE:
            if cc.node_id in self.voters and len(self.voters) == 1:
                raise ProposalDropped("cannot remove the last voter")
        elif cc.type == ConfChangeType.ADD_LEARNER and cc.node_id in self.voters:
            raise ProposalDropped("cannot demote a voter to learner; remove it first")
        if cc.node_id <= 0:
            raise ProposalDropped("node ids are positive")

    def _leader_app_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        frm = m.frm
        if m.reject:
            hint = m.reject_hint
            if m.hint_term > 0:
                # skip every entry of ours whose term is above the follower's hint term
                hint, _ = self.log.find_conflict_by_term(hint, m.hint_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._release_pending_reads()
            self.bcast_append()
        elif old_paused:
            self._send_append(frm)
        while self._send_append(frm, send_if_empty=False):
            pass
        if frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(frm)

    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the quorum's match index if it is of the current term."""
        prs = self.prs
        mci = quorum.committed_index(self.voters, {v: prs[v].match for v in self.voters})
        if mci == quorum.EMPTY_CONFIG_INDEX:
            return False
        return self.log.maybe_commit(mci, self.term)

    def on_persisted(self, index: int, term: int) -> None:
        """The driver persisted entries up to ``index``: the leader acks them for itself."""
        if self.role != Role.LEADER or self.log.term(index) != term:
            return
        pr = self.prs.get(self.id)
        if pr is not None and pr.maybe_update(index) and self._maybe_commit():
            self._release_pending_reads()
            self.bcast_append()

    def _send_timeout_now(self, target: int) -> None:
        # A TimeoutNow cannot be recalled: if it arrives after the transfer was abandoned,
        # voters elect the target without waiting out this leader's lease. So once one is
        # sent, this leader's lease is never trusted again in this term (reads fall back
        # to ReadIndex rounds, which stay safe).
        self.timeout_now_term = self.term
        self.send(Message(MT.TIMEOUT_NOW, to=target, frm=self.id, term=self.term))

    def _leader_transfer(self, target: int, pr: Progress) -> None:
        if pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == target:
                return
            self.lead_transferee = NONE
        if target == self.id:
            return
        self.election_elapsed = 0  # the transfer must finish within an election timeout
        self.lead_transferee = target
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    # -- reads ----------------------------------------------------------------------------

    def _committed_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _leader_read_index(self, m: Message) -> None:
        if len(self.voters) == 1 and self.id in self.voters:
            self._answer_read(m.context, m.frm, self.log.committed)
            return
        if not self._committed_current_term():
            # §6.4 step 1: a new leader learns the commit index by committing its no-op
            self.pending_reads.append(m)
            return
        if self.cfg.read_only_option == ReadOnlyOption.LEASE_BASED and self.lease_valid():
            self._answer_read(m.context, m.frm, self.log.committed)
            return
        ro = self.read_only
        ro.add(m.context, m.frm)
        if not ro.rounds:
            # nothing in flight: start a round now; otherwise the requests wait for the
            # round in flight to finish (or for the next beat) and share the next one
            self._start_read_round()

    def lease_valid(self) -> bool:
        """True while a quorum acknowledged a heartbeat sent less than a lease ago."""
        if self.lead_transferee != NONE or self.timeout_now_term == self.term or self.quiesced:
            return False
        acks = dict(self.lease_acks)
        acks[self.id] = self.clock
        oldest = quorum.committed_index(self.voters, acks)
        lease = self.election_timeout - self.cfg.max_clock_drift_ticks
        return self.clock - oldest < lease

    def _answer_read(self, ctx: bytes, frm: int, index: int) -> None:
        if frm == NONE or frm == self.id:
            self.read_states.append(ReadState(ctx, index))
        else:
            self.send(
                Message(
                    MT.READ_INDEX_RESP,
                    to=frm,
                    frm=self.id,
                    term=self.term,
                    index=index,
                    context=ctx,
                )
            )

    def _release_confirmed_reads(self) -> None:
        ro = self.read_only
        for index, reqs in ro.confirmed(self.voters):
            for ctx, frm in reqs:
                self._answer_read(ctx, frm, index)
        if ro.has_pending() and not ro.rounds:
            # requests that queued behind the finished round get the next one at once
            self._start_read_round()

    def _start_read_round(self) -> None:
        r = self.read_only.start_round(self.log.committed, self.id)
        self.bcast_heartbeat(r.to_bytes(8, "big"))
        self._release_confirmed_reads()

    def _release_pending_reads(self) -> None:
        if not self.pending_reads or not self._committed_current_term():
            return
        pending, self.pending_reads = self.pending_reads, []
        for m in pending:
            self._leader_read_index(m)

    # -- candidate ------------------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
        if t == MT.PROPOSE:
            raise ProposalDropped("no leader (election in progress)")
        if t == MT.APP:
            self.become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self._poll(m.frm, not m.reject)
            if res == quorum.VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self.campaign(pre=False)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == quorum.VoteResult.LOST:
                self.become_follower(self.term, NONE)
        elif t == MT.READ_INDEX or t == MT.TRANSFER_LEADER:
            pass  # no leader to forward to: dropped, the client retries

    # -- follower -------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if self.quiesced and not (
            (t == MT.HEARTBEAT and m.context == QUIESCE_CONTEXT)
            or t == MT.UNREACHABLE
            or t == MT.SNAP_STATUS
        ):
            # anything but the leader's quiesce heartbeat or a transport report (an
            # append, a heartbeat, a local proposal or read, which is forwarded and wakes
            # the leader) wakes us
            self.unquiesce()
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MT.PROPOSE:
            if self.lead == NONE:
                raise ProposalDropped("no leader")
            self.send(Message(MT.PROPOSE, to=self.lead, frm=self.id, entries=m.entries))
        elif t == MT.TRANSFER_LEADER:
            if self.lead != NONE:
                self.send(Message(MT.TRANSFER_LEADER, to=self.lead, frm=m.frm))
        elif t == MT.TIMEOUT_NOW:
            # the leader asked us to take over: campaign at once, skipping pre-vote
            self.hup(transfer=True)
        elif t == MT.READ_INDEX:
            if self.lead != NONE:
                self.send(Message(MT.READ_INDEX, to=self.lead, frm=self.id, context=m.context))
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.context, m.index))

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.send(
                Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=log.committed)
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=last_new))
            return
        # §5.3: reject, with a hint that lets the leader skip a whole term at once
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self.send(
            Message(
                MT.APP_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        ctx = m.context
        if ctx == QUIESCE_CONTEXT:
            ctx = b""
            if self.role == Role.FOLLOWER and self.cfg.quiesce:
                self.quiesced = True  # stop the election timer until something happens
        self.send(
            Message(
                MT.HEARTBEAT_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.index,
                context=ctx,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        idx = self.log.last_index() if self._restore(snap) else self.log.committed
        self.send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=idx))

    def _restore(self, snap: Snapshot) -> bool:
        """Install ``snap`` unless the log already covers it; True if installed."""
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            # we already have the snapshot's last entry: just move the commit index
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self.prs = {}
        self._apply_conf_state(meta.conf)
        return True

    # -- membership -----------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed single-server change; invalid ones are no-ops everywhere."""
        voters = set(self.voters)
        learners = set(self.learners)
        nid = cc.node_id
        if cc.type == ConfChangeType.ADD_VOTER:
            learners.discard(nid)
            voters.add(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            if nid not in voters:
                learners.add(nid)
        elif cc.type == ConfChangeType.REMOVE_NODE and not (nid in voters and len(voters) == 1):
            voters.discard(nid)
            learners.discard(nid)
        before = set(self.prs)
        self._apply_conf_state(ConfState(frozenset(voters), frozenset(learners)))
        self.unquiesce()
        if self.role == Role.LEADER:
            if self.id not in self.voters and self.cfg.step_down_on_removal:
                self.become_follower(self.term, NONE)
            else:
                if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
                    self.lead_transferee = NONE
                if self._maybe_commit():
                    self._release_pending_reads()
                    self.bcast_append()
                for nid in sorted(set(self.prs) - before):
                    self._send_append(nid)  # start probing the new member at once
                self._release_confirmed_reads()
        return self.conf_state()
