"""Queries over one key's version DAG: heads, ancestors, common ancestor, history order.

Every version points at its parents. The DAG is never held here: callers pass a
``lookup`` function (version id -> :class:`Version` or ``None``), so the same code runs
over a storage engine, a dict in a test, or a simulated replica. A version that
``lookup`` cannot find raises :class:`~tidekv.errors.VersionNotFound`.

The total order used for tie-breaks everywhere (and by last-write-wins) is
:func:`order_key`: ``(hlc, origin, id)``; ids are unique, so no two versions tie.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence

from tidekv.errors import InvalidInput, VersionNotFound
from tidekv.versioning.hlc import HLCTimestamp
from tidekv.versioning.version import Version

__all__ = [
    "Lookup",
    "add_head",
    "ancestors",
    "common_ancestor",
    "heads_of",
    "history",
    "is_ancestor",
    "order_key",
]

Lookup = Callable[[str], Version | None]


def order_key(v: Version) -> tuple[HLCTimestamp, str, str]:
    """``(hlc, origin, id)``: the total order of versions that last-write-wins uses."""
    return (v.hlc, v.origin, v.id)


def _get(version_id: str, lookup: Lookup) -> Version:
    v = lookup(version_id)
    if v is None:
        raise VersionNotFound(f"version {version_id} not found", version=version_id)
    return v


def add_head(heads: Sequence[str], new: Version) -> tuple[str, ...]:
    """The heads after ``new`` is written: ``heads`` minus ``new.parents``, plus ``new.id``;
    sorted. A parent that was not a head (an older version) leaves the heads alone."""
    parents = set(new.parents)
    return tuple(sorted({h for h in heads if h not in parents} | {new.id}))


def heads_of(versions: Iterable[Version]) -> list[Version]:
    """The versions that are no other's parent within ``versions`` (duplicates by id
    removed), sorted by id like :func:`add_head`."""
    by_id = {v.id: v for v in versions}
    parents = {p for v in by_id.values() for p in v.parents}
    return sorted((v for vid, v in by_id.items() if vid not in parents), key=lambda v: v.id)


def _closure(start: Iterable[str], lookup: Lookup) -> dict[str, Version]:
    """Every version reachable from ``start`` (inclusive), by id."""
    seen: dict[str, Version] = {}
    stack = list(start)
    while stack:
        vid = stack.pop()
        if vid in seen:
            continue
        v = _get(vid, lookup)
        seen[vid] = v
        stack.extend(p for p in v.parents if p not in seen)
    return seen


def ancestors(version_id: str, lookup: Lookup, *, include_self: bool = False) -> set[str]:
    """Ids of every version reachable through parents from ``version_id``."""
    found = set(_closure([version_id], lookup))
    if not include_self:
        found.discard(version_id)
    return found


def is_ancestor(a: str, b: str, lookup: Lookup) -> bool:
    """True when ``a`` is a strict ancestor of ``b``. Both must exist."""
    _get(a, lookup)
    seen: set[str] = set()
    stack = list(_get(b, lookup).parents)
    while stack:
        vid = stack.pop()
        if vid == a:
            return True
        if vid in seen:
            continue
        seen.add(vid)
        stack.extend(_get(vid, lookup).parents)
    return False


def common_ancestor(a: str, b: str, lookup: Lookup) -> str | None:
    """A lowest common ancestor of ``a`` and ``b`` (each counts as its own ancestor, so
    if one is an ancestor of the other, that one is returned); ``None`` when the two
    share no history.

    When there are several lowest ones (criss-cross merges) the newest by
    :func:`order_key` is returned, so every site picks the same one.
    """
    closure_a = _closure([a], lookup)
    closure_b = _closure([b], lookup)
    common = [v for vid, v in closure_b.items() if vid in closure_a]
    if not common:
        return None
    # Every ancestor of a common ancestor is common too, so the lowest common ancestors
    # are exactly the members that are no other member's parent.
    lowest = heads_of(common)
    return max(lowest, key=order_key).id


def history(heads: Sequence[str], lookup: Lookup, *, limit: int | None = None) -> list[Version]:
    """Every version reachable from ``heads``, newest first.

    The order is topological (a child always before its parents); among the versions
    whose children have all been listed, the largest :func:`order_key` comes first. It
    is deterministic: the same DAG gives the same list everywhere. The whole reachable
    DAG is read even with ``limit`` (the order needs it).
    """
    if limit is not None and limit < 0:
        raise InvalidInput(f"limit must not be negative, got {limit}")
    nodes = _closure(heads, lookup)
    children = dict.fromkeys(nodes, 0)
    for v in nodes.values():
        for p in v.parents:
            children[p] += 1
    ready = [_Desc(v) for vid, v in nodes.items() if children[vid] == 0]
    heapq.heapify(ready)
    out: list[Version] = []
    while ready and (limit is None or len(out) < limit):
        v = heapq.heappop(ready).version
        out.append(v)
        for p in v.parents:
            children[p] -= 1
            if children[p] == 0:
                heapq.heappush(ready, _Desc(nodes[p]))
    return out


class _Desc:
    """Heap item that orders versions by descending :func:`order_key`."""

    __slots__ = ("key", "version")

    def __init__(self, version: Version) -> None:
        self.version = version
        self.key = order_key(version)

    def __lt__(self, other: _Desc) -> bool:
        return self.key > other.key
