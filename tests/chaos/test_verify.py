"""Lost writes, replica convergence and HLC order, on collected data."""

from __future__ import annotations

from tidekv.chaos.verify import compare_replicas, hlc_violations, lost_writes


def test_lost_writes_counts_missing_acknowledged_versions() -> None:
    acked = {"a": {"v1": 1, "v2": 2}, "b": {"v3": 3}}
    histories = {"a": [{"version": "v1"}, {"version": "v2"}], "b": []}
    lost = lost_writes(acked, histories)
    assert lost.acked == 3 and lost.count == 1 and lost.missing == (("b", "v3", 3),)
    assert lost_writes(acked, {**histories, "b": [{"version": "v3"}]}).count == 0


def test_compare_replicas() -> None:
    same = {1: {"a": "v1"}, 2: {"a": "v1"}, 3: {"a": "v1"}}
    assert compare_replicas(same).converged
    differ = {1: {"a": "v1"}, 2: {"a": "v2"}, 3: {}}
    c = compare_replicas(differ)
    assert not c.converged and c.differences == {"a": {1: "v1", 2: "v2", 3: None}}
    assert not compare_replicas({}).converged


def test_hlc_violations() -> None:
    ok = {
        "k": [
            {"version": "b", "parents": ["a"], "hlc": "100.1"},
            {"version": "a", "parents": [], "hlc": "100.0"},
        ]
    }
    assert hlc_violations(ok) == []
    bad = {
        "k": [
            {"version": "b", "parents": ["a"], "hlc": "99.5"},
            {"version": "a", "parents": [], "hlc": "100.0"},
        ]
    }
    assert hlc_violations(bad) == [("k", "b", "a")]
