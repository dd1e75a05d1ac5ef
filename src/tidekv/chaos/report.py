"""What a chaos run measured, and its Markdown report.

Pure: from the recorded operations, the faults as applied, and the end-of-run checks,
:func:`summarize` computes counts, throughput, latency and unavailability per fault
kind, and :func:`render_markdown` writes the report text. The runner writes the files.

*Unavailability* of one fault: the longest stretch, from the fault's start until the
first acknowledged write after it healed, during which no write was acknowledged. A
fault the cluster rides out (a follower paused) shows about the workload's own gap
between writes; one that needs an election shows the election.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tidekv.chaos.history import FAIL, INFO, OK, ClientOp

__all__ = ["AppliedFault", "Summary", "render_markdown", "summarize", "throughput"]


@dataclass(frozen=True, slots=True)
class AppliedFault:
    """A fault as the runner applied it (times in seconds since the workload began)."""

    kind: str
    start: float
    end: float
    what: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class FaultStats:
    kind: str
    count: int
    worst_gap: float
    mean_gap: float
    worst_recovery: float  # heal -> first acknowledged write
    ok_share: float  # acknowledged / all operations invoked during the faults


@dataclass
class Summary:
    duration: float
    counts: dict[str, dict[str, int]]  # kind -> outcome -> n
    latency: dict[str, dict[str, float]]  # kind -> p50/p99/max (ok only, ms)
    faults: list[FaultStats]
    total_ok: int
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


def throughput(
    ops: Sequence[ClientOp], duration: float, bucket: float = 1.0
) -> dict[str, list[int]]:
    """Operations completed per bucket, by outcome."""
    n = max(1, math.ceil(duration / bucket))
    out = {OK: [0] * n, FAIL: [0] * n, INFO: [0] * n}
    for op in ops:
        i = min(n - 1, max(0, int(op.complete / bucket)))
        out[op.outcome][i] += 1
    return out


def _fault_gap(writes: Sequence[float], f: AppliedFault, end_of_run: float) -> tuple[float, float]:
    """(longest stretch without an acknowledged write, heal -> first one after)."""
    after = [t for t in writes if t >= f.end]
    recovered = after[0] if after else end_of_run
    inside = [t for t in writes if f.start <= t <= recovered]
    points = [f.start, *inside, recovered]
    gap = max(b - a for a, b in itertools.pairwise(points)) if len(points) > 1 else 0.0
    return gap, recovered - f.end


def summarize(
    ops: Sequence[ClientOp],
    faults: Sequence[AppliedFault],
    duration: float,
    checks: dict[str, Any] | None = None,
) -> Summary:
    counts: dict[str, dict[str, int]] = {}
    lat: dict[str, list[float]] = {}
    for op in ops:
        counts.setdefault(op.kind, Counter())[op.outcome] += 1
        if op.outcome == OK:
            lat.setdefault(op.kind, []).append(op.latency * 1000.0)
    latency = {}
    for kind, values in lat.items():
        values.sort()
        latency[kind] = {
            "p50": _percentile(values, 0.5),
            "p99": _percentile(values, 0.99),
            "max": values[-1],
        }
    writes = sorted(op.complete for op in ops if op.kind != "read" and op.outcome == OK)
    per_kind: dict[str, list[tuple[float, float, int, int]]] = {}
    for f in faults:
        gap, rec = _fault_gap(writes, f, duration)
        during = [op for op in ops if f.start <= op.invoke < f.end]
        ok = sum(1 for op in during if op.outcome == OK)
        per_kind.setdefault(f.kind, []).append((gap, rec, ok, len(during)))
    stats = []
    for kind in sorted(per_kind):
        rows = per_kind[kind]
        total = sum(r[3] for r in rows)
        stats.append(
            FaultStats(
                kind,
                len(rows),
                max(r[0] for r in rows),
                sum(r[0] for r in rows) / len(rows),
                max(r[1] for r in rows),
                (sum(r[2] for r in rows) / total) if total else math.nan,
            )
        )
    return Summary(
        duration,
        {k: dict(v) for k, v in counts.items()},
        latency,
        stats,
        sum(1 for op in ops if op.outcome == OK),
        dict(checks or {}),
    )


def _fmt(x: float, digits: int = 1) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def render_markdown(
    s: Summary,
    *,
    title: str,
    command: str,
    setup: Sequence[str],
    faults: Sequence[AppliedFault],
    plot: str | None,
    anomalies: Sequence[str] = (),
) -> str:
    c = s.checks
    lines = [f"# {title}", "", f"Re-run: `{command}`", ""]
    lines += [f"- {x}" for x in setup]
    lines += ["", "## Verdict", ""]
    lines += [
        "| check | result |",
        "|---|---|",
        f"| linearizability (per key) | {c.get('linearizable', '?')} |",
        f"| anomalies | **{c.get('anomalies', '?')}** (must be 0) |",
        f"| acknowledged writes lost | **{c.get('lost', '?')}** of {c.get('acked', '?')}"
        " (must be 0) |",
        f"| replicas converged (stale reads of every node) | {c.get('converged', '?')} |",
        f"| HLC order violations (child not after parent) | {c.get('hlc_violations', '?')} |",
        f"| nodes that exited on their own | {c.get('crashes', '?')} |",
        "",
    ]
    if plot:
        lines += [f"![timeline]({plot})", ""]
    lines += [
        "## Operations",
        "",
        "| kind | ok | failed | unknown | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in sorted(s.counts):
        n = s.counts[kind]
        la = s.latency.get(kind, {})
        lines.append(
            f"| {kind} | {n.get(OK, 0)} | {n.get(FAIL, 0)} | {n.get(INFO, 0)} | "
            f"{_fmt(la.get('p50', math.nan))} | {_fmt(la.get('p99', math.nan))} | "
            f"{_fmt(la.get('max', math.nan))} |"
        )
    lines += [
        "",
        f"{s.total} operations in {s.duration:.0f} s, {s.total_ok} acknowledged "
        f"({s.total_ok / max(s.duration, 1e-9):.0f}/s).",
        "",
    ]
    lines += [
        "## Unavailability per fault kind",
        "",
        "Longest stretch without an acknowledged write from the fault's start to the "
        "first acknowledged write after it healed; recovery is heal → that write.",
        "",
        "| fault | times | worst gap s | mean gap s | worst recovery s | ok share during |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in s.faults:
        lines.append(
            f"| {f.kind} | {f.count} | {_fmt(f.worst_gap, 2)} | {_fmt(f.mean_gap, 2)} | "
            f"{_fmt(f.worst_recovery, 2)} | {_fmt(f.ok_share * 100, 0)}% |"
        )
    lines += ["", "## Faults as applied", ""]
    for af in faults:
        note = f" — {af.note}" if af.note else ""
        lines.append(f"- `[{af.start:6.1f}, {af.end:6.1f})` {af.what}{note}")
    if anomalies:
        lines += ["", "## Anomalies", "", "```"]
        lines += list(anomalies)
        lines += ["```"]
    lines.append("")
    return "\n".join(lines)
