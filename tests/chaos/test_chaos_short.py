"""The chaos harness end to end: real ``tide serve`` processes, real faults, real checks.

``test_short_run_passes`` is the CI version of ``python -m tidekv.chaos``: a fixed seed,
~45 s of workload under the schedule's faults (partitions in network namespaces when
they are permitted, kills, pauses, clock jumps, a full disk), then the checks: every
key's history linearizable, no acknowledged write lost, replicas converged, HLC order.
``test_weakened_reads_are_caught`` shows the checker can find something: the same
harness with reads at ``consistency=stale`` (served by any replica, possibly behind)
must report anomalies.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tidekv.chaos.runner import RunOptions, RunResult, run
from tidekv.chaos.schedule import ALL_KINDS, NETWORK_KINDS

pytestmark = pytest.mark.timeout(400)


def _run(**kw: Any) -> tuple[RunResult, str]:
    """One real run; its result and everything it printed."""
    lines: list[str] = []
    result = run(RunOptions(nodes=3, **kw), log=lines.append)
    return result, "\n".join(lines)


def test_short_run_passes(tmp_path: Path) -> None:
    r, text = _run(
        duration=45,
        seed=20261201,
        out=tmp_path,
        fault_min=2.0,
        fault_max=4.0,
        quiet_min=1.0,
        quiet_max=2.0,
        disk_mb=128,
    )
    assert text.startswith("tide chaos: seed 20261201,")
    assert r.anomalies == 0, r.report.read_text()
    assert r.linearizable == "linearizable", r.report.read_text()
    assert r.lost == 0 and r.acked > 100, r.report.read_text()
    assert r.converged, r.report.read_text()
    assert r.hlc_violations == 0
    assert r.unexpected_crashes == 0, r.report.read_text()
    assert r.ok
    kinds = {f.kind for f in r.faults}
    assert len(r.faults) >= 6, text
    if r.network == "netns":
        assert kinds & set(NETWORK_KINDS), text
    else:
        assert "process faults only" in text
    assert kinds <= set(ALL_KINDS)
    report = r.report.read_text()
    assert "| anomalies | **0** (must be 0) |" in report
    assert "| acknowledged writes lost | **0** of" in report
    assert "![timeline](timeline.png)" in report
    assert r.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "history.jsonl").stat().st_size > 0
    assert r.summary.total_ok > 0


def test_weakened_reads_are_caught(tmp_path: Path) -> None:
    r, text = _run(
        duration=15,
        seed=7,
        out=tmp_path,
        weak_reads=True,
        kinds=["partition-one", "partition-leader", "pause"],
    )
    assert "WEAKENED on purpose" in r.report.read_text()
    assert r.linearizable == "not linearizable"
    assert r.anomalies > 0
    assert not r.ok
    assert "not linearizable" in text
    assert "read() ->" in r.report.read_text()  # the checker shows the stale read
    assert r.lost == 0 and r.converged  # writes were not weakened


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "kill,bogus"], "unknown fault kind 'bogus'"),
        (["--nodes", "0"], "--nodes must be 1 to 9"),
        (["--network", "wifi"], "--network must be auto, netns or loopback"),
        (["--reads", "stale"], "--reads must be linearizable, lease or follower"),
        (["--max-steps", "0"], "--max-steps must be positive"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tidekv.chaos", *args], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2
    assert message in p.stderr


def test_loopback_fallback_runs_process_faults_only(tmp_path: Path) -> None:
    r, text = _run(
        duration=10,
        seed=3,
        out=tmp_path,
        network="loopback",
        kinds=["kill", "pause", "partition-halves"],
    )
    assert r.network == "loopback"
    assert "network: loopback, process faults only" in text
    assert "fault partition-halves skipped: no network namespaces" in text
    assert r.faults and {f.kind for f in r.faults} <= {"kill", "pause"}
    assert r.ok, r.report.read_text()
