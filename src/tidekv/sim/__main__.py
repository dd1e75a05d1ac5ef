"""``python -m tidekv.sim``: run the deterministic cluster simulator.

    python -m tidekv.sim --seed 7 --nodes 5 --ticks 400 --faults all
    python -m tidekv.sim --seeds 1..300 --faults all --quiet
    python -m tidekv.sim --seeds 1..10000 --faults all --quiet     # the long run
    python -m tidekv.sim --groups 8 --nodes 5 --seeds 1..300 --quiet  # groups on shared hosts

Exit code 0 when every seed passed, 1 when any seed broke a safety or liveness property
(its replay command is printed), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from tidekv.sim.cluster import SimConfig
from tidekv.sim.faults import FaultConfig, capabilities
from tidekv.sim.runner import parse_seeds, run_seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tidekv.sim", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="run this one seed (verbose)")
    ap.add_argument("--seeds", default=None, help="a range like 1..300, or a list 3,9,12")
    ap.add_argument("--nodes", type=int, default=5, help="3, 5 or 7 (with --groups: 3..9 hosts)")
    ap.add_argument("--ticks", type=int, default=400, help="ticks of the fault phase")
    ap.add_argument(
        "--liveness-ticks", type=int, default=None, help="default 200 (300 with --groups)"
    )
    ap.add_argument(
        "--groups",
        type=int,
        default=1,
        help="more than 1: that many Raft groups share the --nodes hosts and move replicas "
        "(tidekv.sim.multigroup)",
    )
    ap.add_argument("--faults", default="all", help="all, none, or a list: net,partition,...")
    ap.add_argument(
        "--lease",
        default="mixed",
        choices=("mixed", "always", "never"),
        help="lease reads on 30%% of seeds (mixed), every seed, or none",
    )
    ap.add_argument(
        "--report-unreachable",
        action="store_true",
        help="the transport reports every lost message to its sender",
    )
    ap.add_argument(
        "--ring",
        action="store_true",
        help="with --groups: the cluster metadata drives the moves (joins, decommissions, "
        "evictions of hosts down too long)",
    )
    ap.add_argument(
        "--no-quiesce",
        action="store_true",
        help="idle groups keep ticking (quiescence and its node-liveness signal off, no "
        "client lulls)",
    )
    ap.add_argument("--quiet", action="store_true", help="one line per failure + summary")
    ap.add_argument("--stop-on-failure", action="store_true")
    args = ap.parse_args(argv)
    try:
        ok_nodes = range(3, 10) if args.groups > 1 else (3, 5, 7)
        if args.nodes not in ok_nodes or args.groups < 1:
            raise ValueError(f"--nodes must be one of {list(ok_nodes)}; --groups at least 1")
        faults = FaultConfig.parse(args.faults)
        if args.seed is not None:
            seeds = [args.seed]
        elif args.seeds is not None:
            seeds = parse_seeds(args.seeds)
        else:
            seeds = [1]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.groups > 1:
        from tidekv.sim.multigroup import MultiConfig
        from tidekv.sim.multirunner import run_multi_seeds

        mcfg = MultiConfig(
            hosts=args.nodes,
            groups=args.groups,
            ticks=args.ticks,
            faults=faults,
            ring=args.ring,
            quiesce=not args.no_quiesce,
        )
        if args.liveness_ticks is not None:
            mcfg.liveness_ticks = args.liveness_ticks
        rep = run_multi_seeds(
            seeds,
            mcfg,
            verbose=args.seed is not None and not args.quiet,
            stop_on_failure=args.stop_on_failure,
            out=sys.stdout,
        )
        return 0 if rep.ok else 1
    caps = capabilities()
    missing = [k for k, v in caps.items() if not v]
    if missing and not args.quiet:
        print(f"note: the Raft core lacks {missing}; those faults are off")
    config = SimConfig(
        nodes=args.nodes,
        ticks=args.ticks,
        liveness_ticks=200 if args.liveness_ticks is None else args.liveness_ticks,
        faults=faults,
        lease=args.lease,
        report_unreachable=args.report_unreachable,
        quiesce=not args.no_quiesce,
    )
    report = run_seeds(
        seeds,
        config,
        verbose=args.seed is not None and not args.quiet,
        quiet=args.quiet,
        stop_on_failure=args.stop_on_failure,
        out=sys.stdout,
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
