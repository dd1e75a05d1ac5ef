"""Committed entries per second of the pure Raft core: 3 nodes in one process, no faults.

A minimal correct driver (persist to MemoryStorage, then send persisted messages, apply
by counting) over a perfect in-process network. Each loop iteration the leader gets a
batch of 100-byte proposals, then every node handles its Ready and receives its
messages. Counted: entries committed *and applied on all three nodes* per wall second.

    .venv/bin/python bench/raft_loop.py [--entries 200000] [--batch 1000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time

from tidekv.raft import Config, ConfState, MemoryStorage, Message, RawNode, Role


def run(total: int, batch: int, use_batch: bool) -> float:
    ids = (1, 2, 3)
    conf = ConfState(frozenset(ids))
    storages = {i: MemoryStorage(conf) for i in ids}
    nodes = {
        i: RawNode(Config(id=i, rng=random.Random(i), election_tick=10), storages[i]) for i in ids
    }
    inbox: dict[int, list[Message]] = {i: [] for i in ids}
    applied = dict.fromkeys(ids, 0)

    def pump() -> bool:
        moved = False
        for i in ids:
            raw = nodes[i]
            if raw.has_ready():
                moved = True
                rd = raw.ready()
                for m in rd.messages:
                    inbox[m.to].append(m)
                st = storages[i]
                if rd.entries:
                    st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                for m in rd.persisted_messages:
                    inbox[m.to].append(m)
                applied[i] += len(rd.committed_entries)
                raw.advance(rd)
        for i in ids:
            box = inbox[i]
            if box:
                moved = True
                inbox[i] = []
                step = nodes[i].step
                for m in box:
                    step(m)
        return moved

    nodes[1].campaign()
    while pump():
        pass
    assert nodes[1].raft.role == Role.LEADER
    payload = bytes(100)
    leader = nodes[1]
    base = dict(applied)
    t0 = time.perf_counter()
    proposed = 0
    while min(applied[i] - base[i] for i in ids) < total:
        if proposed < total:
            k = min(batch, total - proposed)
            if use_batch:
                leader.propose_batch([payload] * k)
            else:
                for _ in range(k):
                    leader.propose(payload)
            proposed += k
        pump()
    dt = time.perf_counter() - t0
    return total / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--propose-batch", action="store_true", help="RawNode.propose_batch, not propose()"
    )
    a = ap.parse_args()
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        rate = run(a.entries, a.batch, a.propose_batch)
        prof.disable()
        print(f"{rate:,.0f} entries/s (under cProfile)")
        pstats.Stats(prof).sort_stats("tottime").print_stats(10)
    else:
        rates = sorted(run(a.entries, a.batch, a.propose_batch) for _ in range(3))
        print(f"committed+applied on 3 nodes: {rates[1]:,.0f} entries/s (median of 3)")


if __name__ == "__main__":
    main()
