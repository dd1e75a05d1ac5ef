"""Which faults a run injects, and which ones the Raft core is able to take.

``--faults all`` enables everything the core supports; ``none`` runs a clean cluster; a
comma list (``net,partition,crash``) picks. Faults whose core feature is missing are
switched off by :func:`capabilities` with a note printed by the runner, and switched on
automatically once the core grows the feature.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tidekv.raft import MemoryStorage, RawNode, ReadOnlyOption

__all__ = ["FAULT_NAMES", "FaultConfig", "capabilities"]

FAULT_NAMES = (
    "net",  # drops, duplicates, long delays (reordering is always on)
    "partition",  # symmetric and one-way partitions, leader isolation
    "clog",  # links that hold messages for a while, then release them late
    "crash",  # crash (lose unpersisted state) and restart
    "disk",  # slow disk: Ready writes complete later, so a crash can lose them
    "drift",  # nodes tick at slightly different rates
    "snapshot",  # periodic snapshot + log compaction (InstallSnapshot)
    "membership",  # add learner, promote, remove
    "transfer",  # leadership transfer
    "lease",  # some seeds serve reads from the leader lease
)


@dataclass(slots=True)
class FaultConfig:
    net: bool = False
    partition: bool = False
    clog: bool = False
    crash: bool = False
    disk: bool = False
    drift: bool = False
    snapshot: bool = False
    membership: bool = False
    transfer: bool = False
    lease: bool = False

    @classmethod
    def parse(cls, spec: str) -> FaultConfig:
        spec = spec.strip().lower()
        if spec in ("", "none"):
            return cls()
        if spec == "all":
            return cls(**dict.fromkeys(FAULT_NAMES, True))
        names = [s.strip() for s in spec.split(",") if s.strip()]
        bad = [n for n in names if n not in FAULT_NAMES]
        if bad:
            raise ValueError(f"unknown fault(s) {bad}; choose from all, none, {FAULT_NAMES}")
        return cls(**dict.fromkeys(names, True))

    def enabled(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]

    def spec(self) -> str:
        on = self.enabled()
        if not on:
            return "none"
        return "all" if len(on) == len(FAULT_NAMES) else ",".join(on)


def capabilities() -> dict[str, bool]:
    """What the Raft core offers right now (checked at run time, not assumed)."""
    return {
        "snapshot": hasattr(MemoryStorage, "create_snapshot") and hasattr(MemoryStorage, "compact"),
        "membership": hasattr(RawNode, "propose_conf_change")
        and hasattr(RawNode, "apply_conf_change"),
        "transfer": hasattr(RawNode, "transfer_leader"),
        "lease": hasattr(ReadOnlyOption, "LEASE_BASED"),
        "read_index": hasattr(RawNode, "read_index"),
    }


def gate(faults: FaultConfig) -> tuple[FaultConfig, list[str]]:
    """``faults`` minus what the core cannot do yet, and a note per disabled fault."""
    caps = capabilities()
    notes: list[str] = []
    out = FaultConfig(**{f.name: getattr(faults, f.name) for f in fields(faults)})
    for name in ("snapshot", "membership", "transfer", "lease"):
        if getattr(out, name) and not caps[name]:
            setattr(out, name, False)
            notes.append(f"fault '{name}' disabled: the Raft core does not support it yet")
    return out, notes
