"""One seed, one run: the event trace digest, the history and the verdict replay exactly."""

from __future__ import annotations

from tidekv.sim import Cluster, FaultConfig, SimConfig
from tidekv.sim.__main__ import main
from tidekv.sim.runner import parse_seeds, percentiles


def _run(seed: int, faults: str = "all") -> tuple[str, int, list[object], bool]:
    c = Cluster(SimConfig(seed=seed, nodes=5, ticks=150, faults=FaultConfig.parse(faults)))
    r = c.run()
    return r.digest, r.events, list(c.workload.history()), r.ok


def test_same_seed_same_trace() -> None:
    a = _run(4)
    b = _run(4)
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
    assert a[1] > 1000 and len(a[2]) > 10  # a real run, not an empty one


def test_different_seed_different_trace() -> None:
    assert _run(4)[0] != _run(5)[0]


def test_clean_cluster_passes_and_answers_clients() -> None:
    c = Cluster(SimConfig(seed=1, nodes=3, ticks=150, faults=FaultConfig.parse("none")))
    r = c.run()
    assert r.ok, r.violation
    assert r.counts["ok"] > 50
    assert r.liveness_election_ticks is not None


def test_cli_exit_codes(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--seed", "1", "--nodes", "3", "--ticks", "60", "--faults", "none"]) == 0
    assert "seeds: 1  passed: 1" in capsys.readouterr().out
    assert main(["--seeds", "9..3"]) == 2
    assert main(["--faults", "bogus"]) == 2


def test_seed_ranges_and_percentiles() -> None:
    assert parse_seeds("1..3,7") == [1, 2, 3, 7]
    assert percentiles([1.0, 2.0, 3.0, 4.0])[50] == 2.0
    assert percentiles([5.0])[99] == 5.0


def test_faults_missing_from_the_core_are_gated(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tidekv.sim import faults as faults_mod

    monkeypatch.setattr(
        faults_mod,
        "capabilities",
        lambda: dict.fromkeys(("snapshot", "membership", "transfer", "lease", "read_index"), False),
    )
    gated, notes = faults_mod.gate(FaultConfig.parse("all"))
    assert not (gated.snapshot or gated.membership or gated.transfer or gated.lease)
    assert gated.crash and gated.partition and len(notes) == 4
    assert FaultConfig.parse("all").spec() == "all"
    assert FaultConfig.parse("net,crash").spec() == "net,crash"
