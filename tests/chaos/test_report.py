"""Counts, throughput, unavailability per fault, and the Markdown report."""

from __future__ import annotations

import pytest

from tidekv.chaos.history import FAIL, INFO, OK, ClientOp
from tidekv.chaos.report import AppliedFault, render_markdown, summarize, throughput


def _op(kind: str, t0: float, t1: float, outcome: str = OK) -> ClientOp:
    return ClientOp(0, 1, kind, "k", t0, t1, outcome, value=1)


OPS = [
    _op("write", 0.0, 0.5),
    _op("write", 1.0, 1.2),
    _op("read", 1.1, 1.3),
    _op("write", 2.0, 4.0, INFO),  # the fault [2, 5): nothing acknowledged
    _op("read", 2.5, 3.0, FAIL),
    _op("write", 5.5, 6.0),  # first acknowledged write after the heal at 5
    _op("write", 7.0, 7.5),
]
FAULTS = [AppliedFault("kill-leader", 2.0, 5.0, "kill-leader n1")]


def test_summary_counts_and_unavailability() -> None:
    s = summarize(OPS, FAULTS, 8.0, {"anomalies": 0})
    assert s.counts == {"write": {OK: 4, INFO: 1}, "read": {OK: 1, FAIL: 1}}
    assert s.total == 7 and s.total_ok == 5
    (f,) = s.faults
    assert f.kind == "kill-leader" and f.count == 1
    assert f.worst_gap == pytest.approx(4.0)  # from 2.0 to the write acknowledged at 6.0
    assert f.worst_recovery == pytest.approx(1.0)
    assert f.ok_share == pytest.approx(0.0)
    assert s.latency["write"]["max"] == pytest.approx(500.0)


def test_throughput_buckets() -> None:
    tp = throughput(OPS, 8.0)
    assert sum(tp[OK]) == 5 and sum(tp[FAIL]) == 1 and sum(tp[INFO]) == 1
    assert tp[OK][1] == 2  # completed at 1.2 and 1.3


def test_markdown_has_the_verdict_and_the_faults() -> None:
    s = summarize(OPS, FAULTS, 8.0, {"anomalies": 0, "lost": 0, "acked": 4, "converged": True})
    text = render_markdown(
        s,
        title="t",
        command="python -m tidekv.chaos --seed 1",
        setup=["seed 1"],
        faults=FAULTS,
        plot="timeline.png",
    )
    assert "| anomalies | **0** (must be 0) |" in text
    assert "| acknowledged writes lost | **0** of 4 (must be 0) |" in text
    assert "| kill-leader | 1 | 4.00 |" in text
    assert "![timeline](timeline.png)" in text
    assert "kill-leader n1" in text
