"""Leader balancing: which leadership transfers spread the shard leaders evenly.

A shard's leader may be any of its live replicas, so this is an assignment problem:
give every shard one of its replicas so that the leaders per node are as even as
possible. :func:`balance_leaders` starts from the leaders seen and repeatedly finds a
*cost-reducing path*: a chain ``u -s1-> x -s2-> ... -> v`` where ``u`` leads ``s1``, ``x``
replicates ``s1`` and leads ``s2``, ..., and ``v`` has at least two leaders fewer than
``u``; moving each shard's leadership one hop along the chain takes one leader from ``u``
and gives it to ``v``. When no such path is left the assignment is optimal for every
measure of spread at once, the max and the min included (Harvey, Ladner, Lovász, Tamir,
*Semi-matchings for bipartite graphs and load balancing*, 2006). The tests check this
against brute force on small inputs.

The result is one transfer per shard whose leader changes (from its current leader
straight to its final one). For the issue's target — most leaders on one node at most
1.5 times the fewest, with >= 3 nodes — the ring's balance is what makes it reachable;
:func:`spread` reports where a map stands.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping, Sequence

import msgspec

__all__ = ["Transfer", "balance_leaders", "leader_counts", "spread"]


class Transfer(msgspec.Struct, frozen=True, array_like=True):
    shard: int
    frm: int
    to: int


def leader_counts(leaders: Mapping[int, int | None], nodes: Collection[int]) -> dict[int, int]:
    out = dict.fromkeys(sorted(nodes), 0)
    for n in leaders.values():
        if n is not None and n in out:
            out[n] += 1
    return out


def spread(leaders: Mapping[int, int | None], nodes: Collection[int]) -> tuple[int, int]:
    """(most, fewest) leaders on one node of ``nodes``."""
    c = leader_counts(leaders, nodes)
    return (max(c.values()), min(c.values())) if c else (0, 0)


def balance_leaders(
    leaders: Mapping[int, int | None],
    replicas: Mapping[int, Sequence[int]],
    live: Collection[int] | None = None,
) -> list[Transfer]:
    """Transfers (by shard) that leave the leaders as evenly spread as the replicas allow.

    ``leaders``: shard -> its leader seen (None: unknown); ``replicas``: shard -> its
    voters; ``live``: the nodes that may lead (default: every replica). Shards without a
    live leader are left alone (they elect one themselves); nodes counted are the live
    nodes holding at least one replica.
    """
    nodes = {n for reps in replicas.values() for n in reps}
    if live is not None:
        nodes &= set(live)
    cur = {s: ld for s, ld in leaders.items() if ld is not None and ld in nodes and s in replicas}
    count = dict.fromkeys(sorted(nodes), 0)
    led: dict[int, set[int]] = {n: set() for n in count}
    for s, ld in cur.items():
        count[ld] += 1
        led[ld].add(s)
    cand = {s: sorted(n for n in replicas[s] if n in nodes) for s in cur}

    def path_from(u: int) -> list[tuple[int, int]] | None:
        """The shortest cost-reducing path from u as [(shard, next node)], or None."""
        back: dict[int, tuple[int, int]] = {}
        seen = {u}
        q = deque([u])
        best: int | None = None
        while q:
            x = q.popleft()
            for s in sorted(led[x]):
                for y in cand[s]:
                    if y not in seen:
                        seen.add(y)
                        back[y] = (x, s)
                        q.append(y)
        for v in seen - {u}:
            if count[v] <= count[u] - 2 and (best is None or (count[v], v) < (count[best], best)):
                best = v
        if best is None:
            return None
        hops: list[tuple[int, int]] = []
        y = best
        while y != u:
            x, s = back[y]
            hops.append((s, y))
            y = x
        return hops[::-1]

    while True:
        for u in sorted(count, key=lambda n: (-count[n], n)):
            hops = path_from(u)
            if hops is not None:
                break
        else:
            break
        for s, y in hops:
            x = cur[s]
            led[x].discard(s)
            led[y].add(s)
            cur[s] = y
        count[u] -= 1
        count[hops[-1][1]] += 1
    return [
        Transfer(s, ld, cur[s])
        for s, ld in sorted(leaders.items())
        if ld is not None and s in cur and cur[s] != ld
    ]
