"""Random runs with faults over the in-memory cluster; safety checked after every step.

A tiny cousin of the simulator (``tidekv.sim``): message loss and reordering,
partitions, restarts, compaction, leadership transfers and proposals at random nodes.
Checked: one leader per term, applied sequences are prefixes of one another (state
machine safety), and after healing every node applies everything that was committed.
"""

from __future__ import annotations

import contextlib
import itertools
import random

import pytest

from tidekv.raft import ProposalDropped, Role

from .harness import Cluster


def check_safety(c: Cluster, leaders: dict[int, int]) -> None:
    for n in c.nodes.values():
        r = n.raw.raft
        if r.role == Role.LEADER:
            assert leaders.setdefault(r.term, n.id) == n.id, f"two leaders in term {r.term}"
    applied = sorted((n.applied for n in c.nodes.values()), key=len)
    for shorter, longer in itertools.pairwise(applied):
        assert longer[: len(shorter)] == shorter, "state machines diverged"


@pytest.mark.parametrize("seed", range(12))
def test_random_faults_keep_safety(seed: int) -> None:
    rng = random.Random(seed)
    ids = list(range(1, rng.choice([3, 5]) + 1))
    c = Cluster(ids, seed=seed)
    leaders: dict[int, int] = {}
    counter = 0
    for _step in range(300):
        r = rng.random()
        if r < 0.05:
            shuffled = ids[:]
            rng.shuffle(shuffled)
            k = rng.randrange(1, len(ids))
            c.partition(shuffled[:k], shuffled[k:])
        elif r < 0.12:
            c.heal()
        elif r < 0.14:
            c.restart(rng.choice(ids))
        elif r < 0.16:
            nid = rng.choice(ids)
            node = c.nodes[nid]
            if node.applied_index > node.storage.first_index():
                c.compact(nid, rng.randrange(node.storage.first_index(), node.applied_index + 1))
        elif r < 0.17:
            ld = c.leader()
            if ld is not None:
                c.nodes[ld].raw.transfer_leader(rng.choice(ids))
        if rng.random() < 0.5:
            counter += 1
            with contextlib.suppress(ProposalDropped):
                c.propose(rng.choice(ids), f"v{counter}".encode())
        for nid in ids:
            c.tick(nid, rng.randrange(3))
        c.process_ready()
        for nid in ids:
            q = c.queues[nid]
            rng.shuffle(q)
            c.queues[nid] = [m for m in q if rng.random() > 0.15]
        c.deliver()
        check_safety(c, leaders)
    # liveness: heal, let the cluster settle, everything committed gets applied everywhere
    c.heal()
    for _ in range(50):
        try:
            c.propose(c.run_until_leader(), b"final")
            break
        except ProposalDropped:  # e.g. a leadership transfer in progress: retry later
            for nid in ids:
                c.tick(nid)
    for _ in range(60):
        for nid in ids:
            c.tick(nid)
        c.stabilize()
        for n in c.nodes.values():
            r = n.raw.raft
            if r.role == Role.LEADER:
                for pid, pr in r.prs.items():
                    if pr.state.name == "SNAPSHOT":
                        n.raw.report_snapshot(pid, True)
    check_safety(c, leaders)
    final = [c.applied_data(n) for n in ids]
    assert all(f == final[0] for f in final), f"seed {seed}: nodes did not converge"
    assert final[0] and final[0][-1] == b"final"
