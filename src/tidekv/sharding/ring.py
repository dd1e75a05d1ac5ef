"""Placement: a consistent-hash ring with virtual nodes, replicas on distinct nodes.

Every member ``n`` of weight ``w`` puts ``w * vnodes`` points on a ring of 2**64
positions; point ``i`` of node ``n`` sits at ``h(f"node:{n}:{i}")``, where ``h`` is the
same BLAKE2b-64 as :mod:`tidekv.sharding.keys`. A point depends only on its node and its
number, so adding or removing a node adds or removes that node's points and moves no
other point.

Shard ``s`` of ``S`` sits at ``s * 2**64 // S`` (equal partitions of the ring, as in
Dynamo's third strategy; hashing the shard ids instead measured worse, see
``docs/sharding.md``). Its replicas are the first ``rf``
*distinct* nodes met walking clockwise from there (a point at exactly the shard's
position counts; points at one position are ordered by node id). The first of them is
the shard's preferred leader.

Why this moves only what it must: a new node's points are inserted into the walk, so
for each shard the new node either lands among the first ``rf`` distinct nodes (it then
replaces exactly the ``rf``-th old replica) or not at all (nothing changes). Removing a
node is the reverse: each shard that had it gets the next distinct node in its place.
So every changed replica set changes by exactly one node, and that node pair involves the
added or removed node. How *many* shards change is what the virtual nodes control; the
numbers measured for the default are in ``docs/sharding.md`` (``bench/ring_moves.py``).

With fewer nodes than ``rf`` every shard is placed on all the nodes and the
:class:`Placement` says so (``short``, ``warning``).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from tidekv.sharding.keys import DEFAULT_SHARDS, check_shards

__all__ = [
    "DEFAULT_REPLICATION",
    "DEFAULT_VNODES",
    "RING_SIZE",
    "Placement",
    "Ring",
    "point_hash",
    "shard_position",
]

DEFAULT_REPLICATION = 3
"""Replicas per shard, each on a distinct node."""

DEFAULT_VNODES = 64
"""Points on the ring per unit of weight (measured: docs/sharding.md)."""

MAX_VNODES = 4096
MAX_WEIGHT = 64

RING_SIZE = 1 << 64


def point_hash(label: str) -> int:
    """BLAKE2b-64 of the label's UTF-8 bytes, big-endian: a position on the ring."""
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "big")


def shard_position(shard: int, shards: int) -> int:
    """Where shard ``shard`` of ``shards`` sits: evenly spaced from position 0."""
    return shard * RING_SIZE // shards


def _check_members(members: Mapping[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for node, weight in members.items():
        if isinstance(node, bool) or not isinstance(node, int) or node <= 0:
            raise ValueError(f"a node id must be a positive integer: {node!r}")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
            raise ValueError(
                f"node {node}: weight must be an integer in 1..{MAX_WEIGHT}: {weight!r}"
            )
        out[node] = weight
    return out


@dataclass(frozen=True, slots=True)
class Placement:
    """Where every shard's replicas go: ``replicas[s]`` in ring order (first = preferred
    leader)."""

    replication_factor: int
    replicas: tuple[tuple[int, ...], ...]

    @property
    def shards(self) -> int:
        return len(self.replicas)

    @property
    def effective_replication(self) -> int:
        return min((len(r) for r in self.replicas), default=0)

    @property
    def short(self) -> bool:
        """True when there are fewer nodes than the replication factor."""
        return self.effective_replication < self.replication_factor

    @property
    def warning(self) -> str | None:
        if not self.short:
            return None
        return (
            f"only {self.effective_replication} node(s) for replication factor "
            f"{self.replication_factor}: every shard is on all of them"
        )

    def as_map(self) -> dict[int, tuple[int, ...]]:
        return dict(enumerate(self.replicas))

    def load(self) -> dict[int, int]:
        """Replicas per node."""
        out: dict[int, int] = {}
        for reps in self.replicas:
            for n in reps:
                out[n] = out.get(n, 0) + 1
        return dict(sorted(out.items()))


class Ring:
    """The ring of a member list ``{node id: weight}``; immutable."""

    __slots__ = ("_nodes", "_points", "_positions", "members", "vnodes")

    def __init__(self, members: Mapping[int, int], vnodes: int = DEFAULT_VNODES) -> None:
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or not 1 <= vnodes <= MAX_VNODES:
            raise ValueError(f"vnodes must be an integer in 1..{MAX_VNODES}: {vnodes!r}")
        self.members = _check_members(members)
        self.vnodes = vnodes
        points = sorted(
            (point_hash(f"node:{n}:{i}"), n)
            for n, w in self.members.items()
            for i in range(w * vnodes)
        )
        self._points = points
        self._positions = [p for p, _ in points]
        self._nodes = [n for _, n in points]

    def walk(self, position: int, count: int) -> tuple[int, ...]:
        """The first ``count`` distinct nodes clockwise from ``position`` (fewer if the
        ring has fewer nodes)."""
        want = min(count, len(self.members))
        out: list[int] = []
        if want <= 0:
            return ()
        nodes = self._nodes
        n = len(nodes)
        i = bisect.bisect_left(self._positions, position)
        for k in range(n):
            node = nodes[(i + k) % n]
            if node not in out:
                out.append(node)
                if len(out) == want:
                    break
        return tuple(out)

    def replicas(
        self, shard: int, shards: int = DEFAULT_SHARDS, replication: int = DEFAULT_REPLICATION
    ) -> tuple[int, ...]:
        return self.walk(shard_position(shard, shards), replication)

    def place(
        self, shards: int = DEFAULT_SHARDS, replication: int = DEFAULT_REPLICATION
    ) -> Placement:
        check_shards(shards)
        if isinstance(replication, bool) or not isinstance(replication, int) or replication < 1:
            raise ValueError(f"the replication factor must be a positive integer: {replication!r}")
        return Placement(
            replication, tuple(self.replicas(s, shards, replication) for s in range(shards))
        )
