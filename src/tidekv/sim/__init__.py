"""A deterministic simulator for the pure Raft core (TigerBeetle VOPR / FoundationDB style).

One seed drives every random choice of a run: a whole cluster of :class:`RawNode`\\ s in
one process, a lossy reordering network with partitions, crashes that lose unpersisted
state, clock drift, membership changes and leadership transfers, and clients whose
history is checked for linearizability. Run ``python -m tidekv.sim --help``.

Modules: ``network`` (deliveries), ``node`` (the Ready loop and the disk),
``statemachine`` (the replicated register), ``invariants`` (Raft safety, checked every
step), ``workload`` (clients and their history), ``faults`` (what to inject, what the
core supports), ``cluster`` (one run), ``runner`` (many seeds, summaries).
Many groups on shared hosts (``--groups``): ``multigroup`` (one run), ``groups`` (one
group and its checks), ``mover`` (shard moves), ``control`` (moves decided by the
cluster metadata, ``--ring``), ``multirunner`` (many seeds).
"""

from __future__ import annotations

from tidekv.sim.cluster import Cluster, SimConfig, SimResult, replay_command
from tidekv.sim.faults import FaultConfig
from tidekv.sim.invariants import Invariants, SafetyViolation
from tidekv.sim.runner import run_one, run_seeds

__all__ = [
    "Cluster",
    "FaultConfig",
    "Invariants",
    "SafetyViolation",
    "SimConfig",
    "SimResult",
    "replay_command",
    "run_one",
    "run_seeds",
]
