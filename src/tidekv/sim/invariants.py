"""Raft's safety properties (Figure 3 of the paper), checked incrementally after every step.

The checker only *observes*: the nodes report what they did and the checker remembers
enough history to catch a violation the moment it happens:

* **election safety** — at most one leader per term (``leaders``: term -> node);
* **log matching** — an (index, term) pair names one entry everywhere, and its
  predecessor has the same term everywhere (so, by induction, equal prefixes);
* **leader completeness** — a new leader of term T holds every entry seen committed in a
  term below T (each committed index remembers the lowest term at which a node was seen
  holding it committed, an upper bound of the term it was really committed in);
* **state-machine safety** — every node applies the same entry at the same index, and that
  entry is the committed one;
* **no committed entry lost** — a node never rewrites an entry at or below its own commit
  index, never moves its commit index backwards while it is up, and never applies or
  holds, at or below its commit, anything but the entry first seen committed there.

Each check raises :class:`SafetyViolation` naming the rule, so the self-tests can feed
hand-made violating states and see each rule fire.
"""

from __future__ import annotations

from collections.abc import Callable

from tidekv.raft import Entry

__all__ = ["Invariants", "SafetyViolation"]


class SafetyViolation(AssertionError):
    """A Raft safety property broke; ``rule`` names it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


def _same(a: Entry, b: Entry) -> bool:
    return a.term == b.term and a.kind == b.kind and a.data == b.data


class Invariants:
    """Everything observed so far, and the checks against it."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        #: (index, term) -> (entry, term of index - 1 in the log that held it)
        self.by_position: dict[tuple[int, int], tuple[Entry, int | None]] = {}
        #: index -> the entry first seen committed there
        self.committed: dict[int, Entry] = {}
        #: index -> lowest term of a node that was seen holding it committed
        self.commit_term: dict[int, int] = {}
        self.max_committed = 0
        #: index -> the entry first applied there (by any node)
        self.applied: dict[int, Entry] = {}
        self.node_commit: dict[int, int] = {}
        self.node_applied: dict[int, int] = {}
        self.checks = 0

    # -- node lifecycle -------------------------------------------------------------------

    def node_restarted(self, nid: int, commit: int, applied: int) -> None:
        """A restart legitimately forgets the in-memory commit/applied indexes."""
        self.node_commit[nid] = commit
        self.node_applied[nid] = applied

    # -- election safety, leader completeness ---------------------------------------------

    def observe_leader(
        self, nid: int, term: int, term_at: Callable[[int], int | None], first_index: int
    ) -> None:
        """``nid`` is leader of ``term``; ``term_at(i)`` reads its log (None: not there)."""
        self.checks += 1
        other = self.leaders.setdefault(term, nid)
        if other != nid:
            raise SafetyViolation(
                "election safety", f"nodes {other} and {nid} are both leader of term {term}"
            )
        for i in range(max(first_index, 1), self.max_committed + 1):
            ct = self.commit_term.get(i)
            if ct is None or ct >= term:
                continue
            want = self.committed[i]
            have = term_at(i)
            if have != want.term:
                raise SafetyViolation(
                    "leader completeness",
                    f"leader {nid} of term {term} has term {have} at index {i}, but "
                    f"entry (index {i}, term {want.term}) was committed by term {ct}",
                )

    # -- log matching, no overwrite of committed entries ----------------------------------

    def observe_persist(
        self, nid: int, entries: list[Entry], prev_term: int | None, commit: int
    ) -> None:
        """``nid`` made ``entries`` durable right after an entry of term ``prev_term``
        (None: the predecessor is behind a snapshot); ``commit`` is its commit index."""
        self.checks += 1
        before = prev_term
        by_position = self.by_position
        committed = self.committed
        for e in entries:
            pos = (e.index, e.term)
            seen = by_position.get(pos)
            if seen is None:
                by_position[pos] = (e, before)
            else:
                first, first_prev = seen
                if not _same(first, e):
                    raise SafetyViolation(
                        "log matching",
                        f"node {nid} holds a different entry at (index {e.index}, term "
                        f"{e.term}) than was seen before",
                    )
                if before is not None and first_prev is not None and before != first_prev:
                    raise SafetyViolation(
                        "log matching",
                        f"node {nid}: entry (index {e.index}, term {e.term}) follows term "
                        f"{before}, elsewhere it follows term {first_prev}",
                    )
                if first_prev is None and before is not None:
                    by_position[pos] = (first, before)
            if e.index <= commit:
                want = committed.get(e.index)
                if want is not None and not _same(want, e):
                    raise SafetyViolation(
                        "committed entry lost",
                        f"node {nid} overwrote committed entry at index {e.index} (term "
                        f"{want.term}) with term {e.term}, its commit index being {commit}",
                    )
            before = e.term

    # -- commitment -----------------------------------------------------------------------

    def observe_commit(
        self,
        nid: int,
        term: int,
        commit: int,
        entry_at: Callable[[int, int], list[Entry]],
        first_index: int,
    ) -> None:
        """``nid`` (in ``term``) has commit index ``commit``; ``entry_at(lo, hi)`` returns
        its entries [lo, hi) from ``first_index`` on."""
        self.checks += 1
        last = self.node_commit.get(nid, 0)
        if commit < last:
            raise SafetyViolation(
                "committed entry lost",
                f"node {nid} moved its commit index back from {last} to {commit}",
            )
        if commit == last:
            return
        self.node_commit[nid] = commit
        lo = max(last + 1, first_index)
        if lo > commit:
            return
        committed = self.committed
        commit_term = self.commit_term
        for e in entry_at(lo, commit + 1):
            want = committed.get(e.index)
            if want is None:
                committed[e.index] = e
                commit_term[e.index] = term
            else:
                if not _same(want, e):
                    raise SafetyViolation(
                        "committed entry lost",
                        f"node {nid} committed (index {e.index}, term {e.term}) where (index "
                        f"{e.index}, term {want.term}) was committed before",
                    )
                if term < commit_term[e.index]:
                    commit_term[e.index] = term
        if commit > self.max_committed:
            self.max_committed = commit

    # -- state-machine safety -------------------------------------------------------------

    def observe_apply(self, nid: int, e: Entry) -> None:
        self.checks += 1
        last = self.node_applied.get(nid, 0)
        if e.index != last + 1:
            raise SafetyViolation(
                "state-machine safety",
                f"node {nid} applied index {e.index} right after index {last}",
            )
        self.node_applied[nid] = e.index
        first = self.applied.setdefault(e.index, e)
        if not _same(first, e):
            raise SafetyViolation(
                "state-machine safety",
                f"node {nid} applied (index {e.index}, term {e.term}) where another node "
                f"applied (index {e.index}, term {first.term})",
            )
        want = self.committed.get(e.index)
        if want is not None and not _same(want, e):
            raise SafetyViolation(
                "state-machine safety",
                f"node {nid} applied (index {e.index}, term {e.term}) but (index {e.index}, "
                f"term {want.term}) is the committed entry",
            )

    def observe_snapshot_applied(self, nid: int, index: int) -> None:
        """``nid`` restored its state machine from a snapshot covering up to ``index``."""
        self.node_applied[nid] = index
