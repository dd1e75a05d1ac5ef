"""Many seeds of the multi-group simulator, and their summary (``--groups`` of the CLI)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TextIO

from tidekv.sim.multigroup import MultiCluster, MultiConfig, MultiResult
from tidekv.sim.runner import SeedReport, percentiles, run_each

__all__ = ["MultiReport", "run_multi", "run_multi_seeds"]


@dataclass(slots=True)
class MultiReport(SeedReport[MultiResult]):
    def summary(self) -> str:
        rs = self.results
        total: dict[str, int] = {}
        for r in rs:
            for k, v in r.counts.items():
                total[k] = total.get(k, 0) + v
        mt = [x for r in rs for x in r.move_ticks]
        pc = percentiles(mt)
        moves = (
            f"n={len(mt)} p50={pc[50]:.1f} p90={pc[90]:.1f} p99={pc[99]:.1f} max={pc[100]:.1f}"
            if mt
            else "n/a"
        )
        return "\n".join(
            [
                f"seeds: {len(rs)}  passed: {len(rs) - len(self.failures)}  failed: "
                f"{len(self.failures)}  events: {sum(r.events for r in rs)}  groups checked: "
                f"{sum(len(r.checks) for r in rs)}  client ops answered: {total.get('ok', 0)}",
                f"moves started: {total.get('moves_started', 0)}  finished: "
                f"{total.get('moves_done', 0)}  (away from a crashed host: "
                f"{total.get('moves_off_down', 0)})  replicas created: "
                f"{total.get('replicas_created', 0)}  snapshots delivered: "
                f"{total.get('snapshots', 0)}  replica crashes: "
                f"{total.get('crashes', 0)}",
                f"move duration (ticks, first step to last): {moves}",
                f"quiescence: replica ticks skipped {total.get('quiet_ticks', 0)}, liveness "
                f"wake-ups {total.get('liveness_wakes', 0)}",
            ]
            + (
                [
                    f"ring: joins {total.get('joins', 0)}  decommissions "
                    f"{total.get('decommissions', 0)}  evictions {total.get('evictions', 0)}  "
                    f"ConfSeen {total.get('conf_seen', 0)}  zombie members removed "
                    f"{total.get('zombies', 0)}"
                ]
                if "joins" in total
                else []
            )
        )


def run_multi_seeds(
    seeds: list[int],
    config: MultiConfig | None = None,
    *,
    verbose: bool = False,
    stop_on_failure: bool = False,
    out: TextIO | None = None,
) -> MultiReport:
    base = config or MultiConfig()

    def ok_line(r: MultiResult) -> str:
        return f"seed {r.config.seed} ok: {r.counts}; {r.checks}; digest {r.digest}"

    rep = MultiReport(
        run_each(
            seeds,
            lambda seed: MultiCluster(dataclasses.replace(base, seed=seed)).run(),
            out=out,
            details=verbose,
            ok_line=ok_line if verbose else None,
            stop_on_failure=stop_on_failure,
        )
    )
    if out is not None:
        print(rep.summary(), file=out)
    return rep


def run_multi(seed: int, **options: Any) -> MultiResult:
    return MultiCluster(MultiConfig(seed=seed, **options)).run()
