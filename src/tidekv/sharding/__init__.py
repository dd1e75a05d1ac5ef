"""Sharding, pure: key -> shard, shard -> replicas, how shards move, the cluster metadata.

No I/O, no clocks, no global randomness (tests/sharding/test_purity.py). Modules:
``keys`` (the stable key hash and Redis Cluster's hash-tag rule), ``ring`` (consistent-hash
placement with virtual nodes), ``movement`` (safe membership-change plans per shard),
``leaders`` (leader balancing), ``metadata`` (the replicated cluster state machine),
``executor`` (the move executor's decisions), ``liveness`` (the failure detector),
``balancer`` (when to issue which leadership transfers), ``scatter`` (merged listings, the
per-shard watch cursor, the feed interleaver), ``replicas`` (replica ids).
See docs/sharding.md.
"""

from __future__ import annotations

from tidekv.sharding.keys import DEFAULT_SHARDS, hash_tag, hashed_part, key_hash, shard_of
from tidekv.sharding.leaders import Transfer, balance_leaders, spread
from tidekv.sharding.movement import (
    NoQuorum,
    PlanViolation,
    Step,
    StepKind,
    check_plan,
    plan_moves,
    plan_shard,
)
from tidekv.sharding.ring import DEFAULT_REPLICATION, DEFAULT_VNODES, Placement, Ring

__all__ = [
    "DEFAULT_REPLICATION",
    "DEFAULT_SHARDS",
    "DEFAULT_VNODES",
    "NoQuorum",
    "Placement",
    "PlanViolation",
    "Ring",
    "Step",
    "StepKind",
    "Transfer",
    "balance_leaders",
    "check_plan",
    "hash_tag",
    "hashed_part",
    "key_hash",
    "plan_moves",
    "plan_shard",
    "shard_of",
    "spread",
]
