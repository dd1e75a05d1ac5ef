"""``python -m tidekv.chaos`` (and ``tide chaos``): one chaos run, exit 0 only if it passed."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from tidekv.chaos.schedule import ALL_KINDS

__all__ = ["app", "chaos"]

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


def chaos(
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="How many nodes (1-9).")] = 3,
    duration: Annotated[float, typer.Option("--duration", help="Workload seconds.")] = 60.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Replay this run (printed).")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Report directory.")] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults", help=f"Comma-separated fault kinds (default: all): {', '.join(ALL_KINDS)}."
        ),
    ] = None,
    network: Annotated[str, typer.Option("--network", help="auto, netns or loopback.")] = "auto",
    clients: Annotated[int, typer.Option("--clients")] = 6,
    keys: Annotated[int, typer.Option("--keys")] = 10,
    weak_reads: Annotated[
        bool,
        typer.Option(
            "--weak-reads",
            help="Read with consistency=stale: a broken setup, to show the checker finds it.",
        ),
    ] = False,
    reads: Annotated[
        str,
        typer.Option(
            "--reads", help="The clients' read consistency: linearizable, lease, follower."
        ),
    ] = "linearizable",
    engine: Annotated[str, typer.Option("--engine", "-e")] = "lsm",
    timeout: Annotated[float, typer.Option("--timeout", help="Request timeout (s).")] = 2.0,
    tick_ms: Annotated[int, typer.Option("--tick-ms", help="The nodes' Raft tick.")] = 50,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="Checker budget per key (then: undecided).")
    ] = 2_000_000,
) -> None:
    """Run a cluster under random faults and check what the clients saw."""
    from tidekv.chaos.runner import RunOptions, run

    kinds = [k.strip() for k in faults.split(",") if k.strip()] if faults is not None else None
    bad = [k for k in kinds or () if k not in ALL_KINDS]
    problems = []
    if bad:
        problems.append(f"unknown fault kind {bad[0]!r}; known: {', '.join(ALL_KINDS)}")
    if not 1 <= nodes <= 9:
        problems.append("--nodes must be 1 to 9")
    if duration <= 0:
        problems.append("--duration must be positive")
    if network not in ("auto", "netns", "loopback"):
        problems.append("--network must be auto, netns or loopback")
    if tick_ms < 1 or timeout <= 0 or max_steps < 1:
        problems.append("--tick-ms, --timeout and --max-steps must be positive")
    if reads not in ("linearizable", "lease", "follower"):
        problems.append("--reads must be linearizable, lease or follower (--weak-reads for stale)")
    if clients < 1 or keys < 1:
        problems.append("--clients and --keys must be at least 1")
    if problems:
        typer.echo(f"error: {problems[0]}", err=True)
        raise typer.Exit(2)
    argv = sys.argv[1:]
    if argv[:1] == ["chaos"]:  # run as `tide chaos`
        argv = argv[1:]
    opts = RunOptions(
        nodes=nodes,
        duration=duration,
        seed=seed,
        out=Path(out) if out else None,
        kinds=kinds,
        network=network,
        clients=clients,
        keys=keys,
        weak_reads=weak_reads,
        read_consistency=reads,
        engine=engine,
        timeout=timeout,
        tick_ms=tick_ms,
        max_steps=max_steps,
        argv=argv,
    )
    # SIGTERM unwinds like Ctrl-C, so the nodes are stopped and the namespaces removed
    signal.signal(signal.SIGTERM, _terminate)
    result = run(opts, log=lambda s: typer.echo(s, err=True))
    raise typer.Exit(0 if result.ok else 1)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


app.command()(chaos)


def main() -> None:
    app()
