"""Benchmark: entries committed per second by the pure Raft core (not a test).

Setting: 3 nodes in one process, as in the simulator but without faults: every message
is delivered after exactly one hop (a round), the "disk" is MemoryStorage, 100-byte
entries, batching on (the client proposes ``--batch`` entries at once, so one Ready and
one AppendEntries carry many entries). The clock is wall time here, because this is a
benchmark; the rate counts entries the leader has seen committed *and applied*.

    .venv/bin/python bench/raft_core.py                 # rate + cProfile top 15
    .venv/bin/python bench/raft_core.py --json out.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import sys
import time
from collections import deque

from tidekv.raft import (
    Config,
    ConfState,
    HardState,
    MemoryStorage,
    Message,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
)

TARGET = 200_000


class Bench:
    def __init__(self, n: int = 3, inflight: int = 256) -> None:
        voters = frozenset(range(1, n + 1))
        self.nodes: dict[int, RawNode] = {}
        self.stores: dict[int, MemoryStorage] = {}
        for i in sorted(voters):
            st = MemoryStorage(ConfState(voters=voters))
            st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters=voters))))
            st.set_hard_state(HardState(term=1, commit=1))
            self.stores[i] = st
            self.nodes[i] = RawNode(
                Config(id=i, rng=random.Random(i), max_inflight_msgs=inflight), st
            )
        self.queue: deque[Message] = deque()
        self.applied = 0
        self.nodes[1].campaign()
        while self.nodes[1].raft.role is not Role.LEADER:
            self.round()
        self.round()
        self.round()

    def handle(self, rn: RawNode, st: MemoryStorage) -> int:
        applied = 0
        if rn.has_ready():
            rd = rn.ready()
            q = self.queue
            q.extend(rd.messages)
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            q.extend(rd.persisted_messages)
            applied = len(rd.committed_entries)
            rn.advance(rd)
        return applied

    def round(self) -> int:
        """Every node handles its Ready, then every queued message is delivered (one hop)."""
        applied = 0
        for nid, rn in self.nodes.items():
            a = self.handle(rn, self.stores[nid])
            if nid == 1:
                applied += a
        q = self.queue
        nodes = self.nodes
        for _ in range(len(q)):
            m = q.popleft()
            nodes[m.to].step(m)
        return applied

    def run(self, total: int, batch: int, size: int, single: bool = False) -> tuple[int, float]:
        """Propose ``batch`` entries per round (one ``propose_batch`` call, or ``batch``
        ``propose`` calls when ``single``), keeping up to 4 rounds of entries in flight."""
        leader = self.nodes[1]
        payloads = [bytes([i % 251]) * size for i in range(batch)]
        committed = 0
        proposed = 0
        t0 = time.perf_counter()
        while committed < total:
            if proposed - committed < 4 * batch and proposed < total:
                if single:
                    for p in payloads:
                        leader.propose(p)
                else:
                    leader.propose_batch(payloads)
                proposed += batch
            committed += self.round()
        dt = time.perf_counter() - t0
        return committed, dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timed runs")
    ap.add_argument(
        "--single", action="store_true", help="one propose() call per entry (not propose_batch)"
    )
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args(argv)

    rates = []
    for _ in range(args.repeat):
        b = Bench()
        n, dt = b.run(args.entries, args.batch, args.size, args.single)
        rates.append(n / dt)
    best = max(rates)
    print(
        f"raft core, 3 nodes, {args.size}-byte entries, {args.batch} entries per round "
        f"({'propose() each' if args.single else 'propose_batch'}): "
        f"{best:,.0f} entries committed/s (best of {args.repeat}: "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + f"); target {TARGET:,}/s -> {'met' if best >= TARGET else 'NOT met'}"
    )

    prof = cProfile.Profile()
    b = Bench()
    prof.enable()
    b.run(args.entries // 2, args.batch, args.size, args.single)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    text = out.getvalue()
    print(text[text.find("   ncalls") :] if "   ncalls" in text else text)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "raft_core",
                    "nodes": 3,
                    "entry_bytes": args.size,
                    "batch": args.batch,
                    "single_proposals": args.single,
                    "entries": args.entries,
                    "rates": rates,
                    "best_rate": best,
                    "target": TARGET,
                    "met": best >= TARGET,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
