"""The fault schedule: which fault, on which nodes, from when to when — from one seed.

Pure: a :class:`random.Random` seeded with the printed seed makes every choice, so a
seed (and the same options) replays the same schedule. Faults run one at a time: a
fault window, then a quiet window in which the cluster may recover, and so on; the last
fault heals ``cooldown`` seconds before the end, so every fault heals before the checks.

A fault names its targets as node ids, except ``"leader"`` targets, which the runner
resolves to whichever node leads when the fault starts (the schedule cannot know).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "ALL_KINDS",
    "NETWORK_KINDS",
    "PROCESS_KINDS",
    "Fault",
    "ScheduleOptions",
    "generate_schedule",
]

#: faults that need the network namespaces (packet filters and qdiscs per node)
NETWORK_KINDS = (
    "partition-halves",  # two random halves (a majority and a minority)
    "partition-leader",  # the current leader alone on one side
    "partition-one",  # one random node alone on one side
    "partition-bridge",  # two sides that only one node sees both of (non-transitive)
    "partition-oneway",  # one node hears no one (it can still send)
    "slow-net",  # one node's packets delayed (netem)
)
#: faults on processes, clocks and disks (no namespaces needed)
PROCESS_KINDS = (
    "kill",  # SIGKILL one node, restart it at heal
    "kill-leader",
    "pause",  # SIGSTOP one node, SIGCONT at heal
    "pause-leader",
    "clock-jump",  # one node's wall clock jumps (its HLC's physical source), back at heal
    "disk-full",  # one node's data file system filled, emptied at heal
)
ALL_KINDS = NETWORK_KINDS + PROCESS_KINDS


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: ``kind`` from :data:`ALL_KINDS`, active on ``[start, end)`` seconds
    after the workload starts.

    ``groups`` are the partition's sides (node ids, or ``("leader",)`` / ``("rest",)``
    placeholders for ``partition-leader``); ``node`` is the target of a one-node fault
    (0 means "the leader at start time"); ``amount`` is the clock jump in seconds or the
    network delay in ms.
    """

    kind: str
    start: float
    end: float
    node: int = 0
    groups: tuple[tuple[int, ...], ...] = ()
    amount: float = 0.0

    def describe(self) -> str:
        what = self.kind
        if self.groups:
            what += " " + " | ".join(",".join(str(n) for n in g) for g in self.groups)
        elif self.kind in ("kill-leader", "pause-leader", "partition-leader"):
            what += " (leader)"
        else:
            what += f" n{self.node}"
        if self.kind == "clock-jump":
            what += f" {self.amount:+g} s"
        elif self.kind == "slow-net":
            what += f" {self.amount:g} ms"
        return f"[{self.start:6.1f}, {self.end:6.1f}) {what}"


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    duration: float
    nodes: int
    kinds: Sequence[str] = field(default_factory=lambda: ALL_KINDS)
    warmup: float = 2.0  # no fault before this
    cooldown: float = 3.0  # no fault in the last seconds
    fault_min: float = 2.0
    fault_max: float = 6.0
    quiet_min: float = 1.0
    quiet_max: float = 3.0


def _halves(rng: random.Random, ids: list[int]) -> tuple[tuple[int, ...], ...]:
    shuffled = ids[:]
    rng.shuffle(shuffled)
    cut = len(ids) // 2
    return (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))


def _bridge(rng: random.Random, ids: list[int]) -> tuple[tuple[int, ...], ...]:
    """Two sides that overlap in exactly one node (it sees both, they see only it)."""
    shuffled = ids[:]
    rng.shuffle(shuffled)
    middle = shuffled[0]
    rest = shuffled[1:]
    cut = len(rest) // 2
    return (tuple(sorted([*rest[:cut], middle])), tuple(sorted([*rest[cut:], middle])))


def _one(kind: str, rng: random.Random, ids: list[int], start: float, end: float) -> Fault:
    if kind == "partition-halves":
        return Fault(kind, start, end, groups=_halves(rng, ids))
    if kind == "partition-bridge":
        return Fault(kind, start, end, groups=_bridge(rng, ids))
    if kind == "partition-one":
        node = rng.choice(ids)
        rest = tuple(i for i in ids if i != node)
        return Fault(kind, start, end, node=node, groups=((node,), rest))
    if kind in ("partition-leader", "kill-leader", "pause-leader"):
        return Fault(kind, start, end, node=0)
    if kind == "clock-jump":
        amount = rng.choice([-1, 1]) * rng.uniform(5.0, 120.0)
        return Fault(kind, start, end, node=rng.choice(ids), amount=round(amount, 1))
    if kind == "slow-net":
        return Fault(kind, start, end, node=rng.choice(ids), amount=float(rng.choice([50, 200])))
    if kind in ("kill", "pause", "disk-full", "partition-oneway"):
        return Fault(kind, start, end, node=rng.choice(ids))
    raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(ALL_KINDS)}")


def generate_schedule(seed: int, opts: ScheduleOptions) -> list[Fault]:
    """The faults for one run, in start order; every one ends before the cooldown."""
    unknown = [k for k in opts.kinds if k not in ALL_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind {unknown[0]!r}; known: {', '.join(ALL_KINDS)}")
    if opts.nodes < 1:
        raise ValueError("a schedule needs at least one node")
    kinds = list(opts.kinds)
    if not kinds:
        return []
    rng = random.Random(seed)
    ids = list(range(1, opts.nodes + 1))
    last = opts.duration - opts.cooldown
    faults: list[Fault] = []
    t = opts.warmup
    # a deck of the kinds, reshuffled when used up: every kind comes up in a long run
    deck: list[str] = []
    while True:
        length = rng.uniform(opts.fault_min, opts.fault_max)
        if t + length > last:
            break
        if not deck:
            deck = kinds[:]
            rng.shuffle(deck)
        kind = deck.pop()
        if kind == "partition-bridge" and opts.nodes < 3:
            kind = "partition-halves"
        # the end is rounded down (never past the cooldown: round() could go 0.005 over)
        end = min(math.floor((t + length) * 100) / 100, last)
        faults.append(_one(kind, rng, ids, round(t, 2), end))
        t += length + rng.uniform(opts.quiet_min, opts.quiet_max)
    return faults
