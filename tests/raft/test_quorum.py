"""quorum.py against a dumb reference on random inputs (STYLE.md item 6)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.raft import quorum
from tidekv.raft.quorum import VoteResult

ids = st.frozensets(st.integers(1, 9), max_size=7)
acks = st.dictionaries(st.integers(1, 9), st.integers(0, 50))
votes = st.dictionaries(st.integers(1, 9), st.booleans())


def dumb_committed(voters: frozenset[int], acked: dict[int, int]) -> int:
    """The largest index i such that a majority of voters acked >= i."""
    if not voters:
        return quorum.EMPTY_CONFIG_INDEX
    best = 0
    for i in range(0, 51):
        if sum(acked.get(v, 0) >= i for v in voters) > len(voters) // 2:
            best = i
    return best


def dumb_vote(voters: frozenset[int], vs: dict[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    yes = sum(vs.get(v) is True for v in voters)
    no = sum(vs.get(v) is False for v in voters)
    maj = len(voters) // 2 + 1
    if yes >= maj:
        return VoteResult.WON
    if no > len(voters) - maj:
        return VoteResult.LOST
    return VoteResult.PENDING


@settings(max_examples=800)
@given(ids, acks)
def test_committed_index_matches_reference(voters: frozenset[int], acked: dict[int, int]) -> None:
    assert quorum.committed_index(voters, acked) == dumb_committed(voters, acked)


@settings(max_examples=500)
@given(ids, ids, acks)
def test_joint_committed_index(a: frozenset[int], b: frozenset[int], acked: dict[int, int]) -> None:
    want = min(dumb_committed(a, acked), dumb_committed(b, acked))
    assert quorum.joint_committed_index(a, b, acked) == want


@settings(max_examples=800)
@given(ids, votes)
def test_vote_result_matches_reference(voters: frozenset[int], vs: dict[int, bool]) -> None:
    assert quorum.vote_result(voters, vs) == dumb_vote(voters, vs)


@settings(max_examples=500)
@given(ids, ids, votes)
def test_joint_vote_result(a: frozenset[int], b: frozenset[int], vs: dict[int, bool]) -> None:
    ra, rb = dumb_vote(a, vs), dumb_vote(b, vs)
    if ra == rb == VoteResult.WON:
        want = VoteResult.WON
    elif VoteResult.LOST in (ra, rb):
        want = VoteResult.LOST
    else:
        want = VoteResult.PENDING
    assert quorum.joint_vote_result(a, b, vs) == want
