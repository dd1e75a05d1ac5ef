"""End to end, the simulator's history check can fail: with reads served from the local
state machine (no ReadIndex), partitions make followers answer stale values and the
linearizability checker reports it."""

from __future__ import annotations

from tidekv.sim import Cluster, FaultConfig, SimConfig


def test_local_reads_are_caught_as_not_linearizable() -> None:
    rules = []
    for seed in range(1, 9):
        cfg = SimConfig(
            seed=seed,
            nodes=5,
            ticks=300,
            faults=FaultConfig.parse("net,partition"),
            unsafe_local_reads=True,
        )
        r = Cluster(cfg).run()
        rules.append(r.rule)
    assert "linearizability" in rules, rules


def test_the_same_seeds_pass_with_readindex() -> None:
    for seed in range(1, 9):
        cfg = SimConfig(seed=seed, nodes=5, ticks=300, faults=FaultConfig.parse("net,partition"))
        r = Cluster(cfg).run()
        assert r.rule in (None, "liveness"), r.violation
