"""Quorum arithmetic, pure and small: commit indexes and vote tallies.

A *majority config* is a set of voter ids. The committed index of a majority config is
the largest index acknowledged by a majority: sort the voters' acknowledged indexes
descending and take the ``n // 2``-th (0-based). A *joint config* (incoming, outgoing)
needs both majorities, so its committed index is the min of the two and a vote is won
only when both are won. tidekv changes membership one server at a time and so only
uses the majority functions today; the joint ones are kept (and tested) so the switch to
joint consensus does not have to touch this module.

An empty majority config commits everything (``EMPTY_CONFIG_INDEX``) and wins every
vote, so that "joint with an empty outgoing half" reduces to the incoming half.
``tests/raft/test_quorum.py`` checks these against a dumb reference on random inputs.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Collection, Mapping

EMPTY_CONFIG_INDEX = sys.maxsize
"""The committed index of an empty config: it places no constraint."""


class VoteResult(enum.IntEnum):
    PENDING = 0
    """Neither a majority for nor against yet."""
    LOST = 1
    WON = 2


def committed_index(voters: Collection[int], acked: Mapping[int, int]) -> int:
    """Largest index acknowledged by a majority of ``voters`` (missing ids count as 0)."""
    n = len(voters)
    if n == 0:
        return EMPTY_CONFIG_INDEX
    if n == 1:
        for v in voters:
            return acked.get(v, 0)
    srt = sorted([acked.get(v, 0) for v in voters], reverse=True)
    return srt[n // 2]


def joint_committed_index(
    incoming: Collection[int], outgoing: Collection[int], acked: Mapping[int, int]
) -> int:
    """Committed index of a joint config: both majorities must have acknowledged it."""
    return min(committed_index(incoming, acked), committed_index(outgoing, acked))


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON when a majority granted, LOST when a majority can no longer grant, else PENDING.

    Votes from ids outside ``voters`` are ignored.
    """
    if not voters:
        return VoteResult.WON
    granted = missing = 0
    for v in voters:
        r = votes.get(v)
        if r is None:
            missing += 1
        elif r:
            granted += 1
    q = len(voters) // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if granted + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_vote_result(
    incoming: Collection[int], outgoing: Collection[int], votes: Mapping[int, bool]
) -> VoteResult:
    """Vote result of a joint config: won only if both halves won, lost if either lost."""
    r1 = vote_result(incoming, votes)
    r2 = vote_result(outgoing, votes)
    if r1 == r2:
        return r1
    if VoteResult.LOST in (r1, r2):
        return VoteResult.LOST
    return VoteResult.PENDING
