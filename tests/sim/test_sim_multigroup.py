"""CI: several Raft groups on shared hosts, replicas moving (add learner -> catch up ->
promote -> transfer -> remove) while hosts crash, links drop, partition and clog.

Every group's safety invariants are checked after every step and its client history for
linearizability at the end; the healed cluster must converge and finish every move.
The larger run is a documented command (docs/sharding.md):

    python -m tidekv.sim --groups 8 --nodes 5 --seeds 1..1000 --quiet
    python -m tidekv.sim --groups 8 --nodes 7 --ring --seeds 1..300 --quiet
"""

from __future__ import annotations

import functools

import pytest

from tidekv.sim.__main__ import main
from tidekv.sim.faults import FaultConfig
from tidekv.sim.multigroup import MultiCluster, MultiConfig, MultiResult
from tidekv.sim.multirunner import run_multi

SEEDS = range(1, 121)


@functools.cache
def _results() -> tuple[MultiResult, ...]:
    faults = FaultConfig.parse("all")
    return tuple(
        run_multi(seed, hosts=(5, 7)[seed % 2], groups=(4, 8)[(seed // 2) % 2], faults=faults)
        for seed in SEEDS
    )


def total_of(results: tuple[MultiResult, ...], key: str) -> int:
    return sum(r.counts.get(key, 0) for r in results)


def _report(bad: list[MultiResult]) -> str:
    return "\n".join(f"seed {r.config.seed}: {r.violation}\n  replay: {r.replay}" for r in bad)


@pytest.mark.slow
def test_no_safety_or_liveness_violation_over_many_seeds() -> None:
    results = _results()
    bad = [r for r in results if not r.ok]
    assert not bad, _report(bad)
    assert all(len(r.checks) == r.config.groups for r in results)
    assert all(c.startswith(f"group {i}: linearizable") for r in results
               for i, c in enumerate(r.checks))  # fmt: skip


@pytest.mark.slow
def test_the_runs_moved_replicas_and_served_clients() -> None:
    results = _results()
    started = sum(r.counts["moves_started"] for r in results)
    done = sum(r.counts["moves_done"] for r in results)
    assert started == done  # every move finished once the faults healed
    assert done > 3 * len(results)
    assert sum(r.counts["moves_off_down"] for r in results) > len(results) // 2
    assert sum(r.counts["ok"] for r in results) > 100 * len(results)
    # new learners were caught up by snapshot (the initial membership is one)
    assert sum(r.counts["snapshots"] for r in results) >= done
    # replicas beyond the initial three per group were created and caught up
    assert all(r.counts["replicas_created"] >= 3 * r.config.groups for r in results)
    assert sum(r.counts["replicas_created"] - 3 * r.config.groups for r in results) == done


def test_same_seed_same_trace_and_different_seed_differs() -> None:
    faults = FaultConfig.parse("all")
    a = MultiCluster(MultiConfig(seed=7, faults=faults)).run()
    b = MultiCluster(MultiConfig(seed=7, faults=faults)).run()
    c = MultiCluster(MultiConfig(seed=8, faults=faults)).run()
    assert a.ok and a.digest == b.digest and a.events == b.events and a.counts == b.counts
    assert a.digest != c.digest
    assert a.events > 10_000


def test_groups_share_hosts_as_the_ring_places_them() -> None:
    from tidekv.sharding import Ring

    mc = MultiCluster(MultiConfig(seed=1, hosts=5, groups=8))
    want = Ring(dict.fromkeys(range(1, 6), 1)).place(8, 3).replicas
    for gid, g in mc.groups.items():
        assert tuple(g.host_of[r] for r in sorted(g.replicas)) == want[gid]


def test_cli_runs_groups(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--groups", "3", "--nodes", "5", "--seeds", "1..2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "seeds: 2  passed: 2" in out and "groups checked: 6" in out


def test_the_simulator_catches_raft_ids_reused_across_incarnations() -> None:
    """Broken on purpose: a host that re-joins a group it left comes back under its old
    Raft id with an empty disk (what "Raft id = node id in every group" would do). The
    forgotten log and votes, and the leader's stale view of the old incarnation, break
    Raft: seed 98 elects a leader that lacks a committed entry; seed 20 hits the core's
    "commit out of range" assertion (a heartbeat's commit beyond the new, empty log).
    The seeds were found before quiescence, whose lulls and silences change every trace:
    they run with it off."""
    faults = FaultConfig.parse("all")
    broken = {
        s: run_multi(s, faults=faults, reuse_replica_ids=True, quiesce=False) for s in (20, 98)
    }
    assert broken[98].rule == "leader completeness", broken[98].violation
    assert broken[20].rule == "raised RaftLogError", broken[20].violation
    assert "out of range" in (broken[20].violation or "")
    # the same seeds with a fresh replica id per incarnation are fine
    assert all(run_multi(s, faults=faults, quiesce=False).ok for s in broken)
    assert all(run_multi(s, faults=faults).ok for s in broken)


@functools.cache
def _ring_results() -> tuple[MultiResult, ...]:
    faults = FaultConfig.parse("all")
    return tuple(
        run_multi(seed, hosts=(6, 7)[seed % 2], groups=8, faults=faults, ring=True)
        for seed in range(1, 41)
    )


@pytest.mark.slow
def test_ring_driven_moves_reach_the_ring_placement() -> None:
    """The cluster metadata decides: hosts join and are decommissioned, crashed hosts are
    marked down and evicted after a while; the executor runs each shard's plan through
    the group's leader. At the end (checked inside each run) every shard's record, its
    group's real configuration and the ring's placement agree, and every group is safe
    and linearizable."""
    results = _ring_results()
    bad = [r for r in results if not r.ok]
    assert not bad, _report(bad)
    total = {k: sum(r.counts.get(k, 0) for r in results) for k in
             ("joins", "decommissions", "evictions", "moves_done", "conf_seen")}  # fmt: skip
    assert total["joins"] > len(results) and total["decommissions"] > len(results)
    assert total["evictions"] > len(results) // 2
    assert total["moves_done"] > 10 * len(results)
    # with the executor's rules no member lost its replica in these seeds (one did in the
    # 300-seed run, docs/sharding.md: the executor removed it)
    assert sum(r.counts.get("zombies", 0) for r in results) == 0
    # liveness came from the failure detector (heartbeats); leaders were balanced: each
    # run ends with the leaders seen equal to the real ones and no balancing transfer
    # left (both checked inside the run: balance_leaders finds no better assignment)
    assert total_of(results, "marked_down") > len(results)
    assert total_of(results, "marked_up") > len(results) // 2
    assert total_of(results, "leader_transfers") > len(results)


def test_ring_mode_replays() -> None:
    faults = FaultConfig.parse("all")
    a = run_multi(3, hosts=6, groups=4, faults=faults, ring=True)
    b = run_multi(3, hosts=6, groups=4, faults=faults, ring=True)
    assert a.ok and a.digest == b.digest and a.counts == b.counts
    assert "--ring" in a.replay
