"""Run many seeds and summarise: failures (with replay commands) and latency percentiles."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TextIO, TypeVar

from tidekv.sim.cluster import Cluster, SimConfig, SimResult

__all__ = ["Report", "SeedReport", "parse_seeds", "percentiles", "run_each", "run_one", "run_seeds"]


def parse_seeds(spec: str) -> list[int]:
    """``"1..300"`` (inclusive), ``"5"``, or ``"3,9,12"``."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if ".." in part:
            lo_s, hi_s = part.split("..", 1)
            lo, hi = int(lo_s), int(hi_s)
            if hi < lo:
                raise ValueError(f"empty seed range {part!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    if not out:
        raise ValueError("no seeds given")
    return out


def percentiles(xs: list[float], ps: tuple[int, ...] = (50, 90, 99, 100)) -> dict[int, float]:
    """Nearest-rank percentiles (p100 is the maximum)."""
    if not xs:
        return {}
    s = sorted(xs)
    n = len(s)
    return {p: s[min(n - 1, max(0, -(-p * n // 100) - 1))] for p in ps}


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    pc = percentiles(xs)
    return f"n={len(xs)} p50={pc[50]:.1f} p90={pc[90]:.1f} p99={pc[99]:.1f} max={pc[100]:.1f}"


def run_one(seed: int, **options: Any) -> SimResult:
    """One seed; ``options`` are :class:`SimConfig` fields (nodes, ticks, faults, ...)."""
    return Cluster(SimConfig(seed=seed, **options)).run()


class _Result(Protocol):
    ok: bool
    rule: str | None
    violation: str | None

    @property
    def replay(self) -> str: ...


R = TypeVar("R", bound=_Result)


@dataclass(slots=True)
class SeedReport(Generic[R]):
    """The results of many seeds (of either simulator) and which of them failed."""

    results: list[R] = field(default_factory=list)

    @property
    def failures(self) -> list[R]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class Report(SeedReport[SimResult]):
    def summary(self) -> str:
        rs = self.results
        elections = [x for r in rs for x in r.election_ticks]
        commits = [x for r in rs for x in r.commit_ticks]
        reads = [x for r in rs for x in r.read_ticks]
        live_e = [r.liveness_election_ticks for r in rs if r.liveness_election_ticks is not None]
        live_c = [r.liveness_commit_ticks for r in rs if r.liveness_commit_ticks is not None]
        ops = sum(r.counts.get("ok", 0) for r in rs)
        notes = sorted({n for r in rs for n in r.notes if "disabled" in n})
        lines = [
            f"seeds: {len(rs)}  passed: {len(rs) - len(self.failures)}  "
            f"failed: {len(self.failures)}  events: {sum(r.events for r in rs)}  "
            f"client ops answered: {ops}  lease-read seeds: {sum(r.lease for r in rs)}",
            f"election time (ticks, candidate -> leader, all elections): {_fmt(elections)}",
            f"liveness: ticks from heal to a stable leader: {_fmt(live_e)}",
            f"liveness: ticks to commit a probe entry:     {_fmt(live_c)}",
            f"client write/cas latency (ticks):            {_fmt(commits)}",
            f"client read latency (ticks):                 {_fmt(reads)}",
            f"quiescence: replica ticks skipped {sum(r.counts.get('quiet_ticks', 0) for r in rs)}"
            f", liveness wake-ups {sum(r.counts.get('liveness_wakes', 0) for r in rs)}",
            *notes,
        ]
        return "\n".join(lines)


def run_each(
    seeds: list[int],
    run: Callable[[int], R],
    *,
    out: TextIO | None,
    details: bool,
    ok_line: Callable[[R], str] | None = None,
    stop_on_failure: bool = False,
) -> list[R]:
    """Run every seed; print each failure with its replay command (and the violation when
    ``details`` or only one seed), and ``ok_line`` of each passing run when given. Shared
    by the single-group and the multi-group runners."""
    results: list[R] = []
    for seed in seeds:
        r = run(seed)
        results.append(r)
        if out is not None:
            if not r.ok:
                print(f"FAIL seed {seed}: {r.rule}\n  replay: {r.replay}", file=out)
                if details or len(seeds) == 1:
                    print("  " + (r.violation or "").replace("\n", "\n  "), file=out)
            elif ok_line is not None:
                print(ok_line(r), file=out)
        if stop_on_failure and not r.ok:
            break
    return results


def run_seeds(
    seeds: list[int],
    config: SimConfig | None = None,
    *,
    verbose: bool = False,
    quiet: bool = False,
    stop_on_failure: bool = False,
    out: TextIO | None = None,
) -> Report:
    base = config or SimConfig()

    def ok_line(r: SimResult) -> str:
        return (
            f"seed {r.config.seed} ok: {r.check}; events {r.events}; counts {r.counts}; "
            f"lease reads {r.lease}; digest {r.digest}"
        )

    rep = Report(
        run_each(
            seeds,
            lambda seed: Cluster(dataclasses.replace(base, seed=seed)).run(),
            out=out,
            details=not quiet,
            ok_line=ok_line if verbose else None,
            stop_on_failure=stop_on_failure,
        )
    )
    if out is not None:
        print(rep.summary(), file=out)
    return rep
