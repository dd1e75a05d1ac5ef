"""Clients of the simulated cluster and the history they record.

Each client runs one operation at a time against the key-value register: ``write``,
``read`` (ReadIndex on the node it contacts, so a follower read when that node is a
follower; lease-based when the cluster runs with lease reads) or ``cas``. It picks a
random node, and if no answer comes within ``timeout`` it retries on another random node
with the *same* request id (the state machine's session table makes the retry apply at
most once), up to ``attempts`` times; then the outcome is unknown.

Outcomes in the history (:class:`~tidekv.check.Operation`):

* answered: ``ok=True`` with the result, ``complete`` = the time of the answer;
* refused before anything was proposed (the first node knew no leader): ``ok=False``;
* given up: unknown. At the end the simulator looks at what the nodes applied: if the
  command was applied somewhere, it took effect no later than the first apply (commit
  precedes apply), so ``complete`` becomes that instant and the result is the one the
  state machine computed; if it was applied nowhere, no read could have seen it and it
  is recorded as not having happened. A read that was given up has no effect and is
  left out. This keeps the checker's search small without hiding anything a client
  could have observed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tidekv.check import Operation
from tidekv.sim.node import Applied
from tidekv.sim.statemachine import Command, KVStateMachine, encode_command

__all__ = ["Gateway", "Workload", "WorkloadConfig"]


@dataclass(slots=True)
class WorkloadConfig:
    clients: int = 4
    keys: int = 3
    think_min: int = 10
    think_max: int = 300
    timeout: int = 3000
    attempts: int = 3
    write: float = 0.4
    read: float = 0.4  # the rest is cas
    values: int = 1000
    #: lulls: the last ``lull_len`` units of every ``lull_period`` carry no new client
    #: operation (a client due then waits for the period's end), so groups fall idle and
    #: quiesce while the faults go on; 0: no lulls
    lull_period: int = 0
    lull_len: int = 0


@dataclass(slots=True)
class Gateway:
    """What the workload may do to the cluster."""

    node_ids: Callable[[], list[int]]
    propose: Callable[[int, bytes], bool]  # False: refused at once, nothing proposed
    read_index: Callable[[int, bytes], bool]
    schedule: Callable[[int, str, tuple[int, int]], None]


@dataclass(slots=True)
class _Op:
    client: int
    seq: int
    kind: str
    key: str
    a: int | None
    b: int | None
    invoke: int
    attempt: int = 0
    complete: int | None = None
    ok: bool | None = None
    output: Any = None
    nodes: list[int] = field(default_factory=list)


class Workload:
    def __init__(self, rng: random.Random, config: WorkloadConfig, gateway: Gateway) -> None:
        self.rng = rng
        self.config = config
        self.gw = gateway
        self.ops: list[_Op] = []
        self.current: dict[int, _Op | None] = {c: None for c in range(1, config.clients + 1)}
        self.seq: dict[int, int] = dict.fromkeys(self.current, 0)
        self.first_apply: dict[tuple[int, int], tuple[int, Any]] = {}
        self.active = False
        self.latencies: list[int] = []  # completed write/cas, in units
        self.read_latencies: list[int] = []

    # -- driving --------------------------------------------------------------------------

    def start(self, now: int) -> None:
        self.active = True
        for c in self.current:
            self._think(now, c)

    def stop(self) -> None:
        self.active = False

    def _think(self, now: int, client: int) -> None:
        cfg = self.config
        at = now + self.rng.randint(cfg.think_min, cfg.think_max)
        if cfg.lull_period:
            phase = at % cfg.lull_period
            if phase >= cfg.lull_period - cfg.lull_len:
                at += cfg.lull_period - phase
        self.gw.schedule(at, "client", (client, 0))

    def on_client_timer(self, now: int, client: int) -> None:
        if not self.active or self.current[client] is not None:
            return
        cfg = self.config
        rng = self.rng
        self.seq[client] += 1
        seq = self.seq[client]
        x = rng.random()
        key = f"k{rng.randrange(cfg.keys)}"
        if x < cfg.write:
            op = _Op(client, seq, "write", key, rng.randrange(cfg.values), None, now)
        elif x < cfg.write + cfg.read:
            op = _Op(client, seq, "read", key, None, None, now)
        else:
            # expect a recent value often enough that some CAS succeed
            expected = rng.choice([None, *self._recent_values(key)])
            op = _Op(client, seq, "cas", key, expected, rng.randrange(cfg.values), now)
        self.ops.append(op)
        self.current[client] = op
        self._attempt(now, op)

    def _recent_values(self, key: str) -> list[int]:
        vals: list[int] = []
        for op in reversed(self.ops[-20:]):
            if op.key == key and op.ok:
                if op.kind == "read" and op.output is not None:
                    vals.append(op.output)
                elif op.kind == "write" and op.a is not None:
                    vals.append(op.a)
        return vals[:3]

    def _attempt(self, now: int, op: _Op) -> None:
        while True:
            op.attempt += 1
            node = self.rng.choice(self.gw.node_ids())
            op.nodes.append(node)
            if op.kind == "read":
                ctx = f"{op.client}:{op.seq}:{op.attempt}".encode()
                accepted = self.gw.read_index(node, ctx)
            else:
                cmd = Command(op.client, op.seq, op.kind, op.key, op.a, op.b)
                accepted = self.gw.propose(node, encode_command(cmd))
            if accepted:
                self.gw.schedule(now + self.config.timeout, "timeout", (op.client, op.seq))
                return
            if op.attempt == 1 and op.kind != "read":
                self._finish(now, op, ok=False)  # nothing was proposed: a clean failure
                return
            if op.attempt >= self.config.attempts:
                self._finish(now, op, ok=None)
                return

    def on_timeout(self, now: int, client: int, seq: int) -> None:
        op = self.current[client]
        if op is None or op.seq != seq:
            return
        if op.attempt >= self.config.attempts or not self.active:
            self._finish(now, op, ok=None)
        else:
            self._attempt(now, op)

    def _finish(self, now: int, op: _Op, ok: bool | None, output: Any = None) -> None:
        op.ok = ok
        op.output = output
        op.complete = now if ok is not None else None
        self.current[op.client] = None
        if ok:
            (self.read_latencies if op.kind == "read" else self.latencies).append(now - op.invoke)
        if self.active:
            self._think(now, op.client)

    # -- answers from nodes ---------------------------------------------------------------

    def on_apply(self, now: int, a: Applied) -> None:
        c = a.command
        if a.fresh:
            self.first_apply.setdefault((c.client, c.seq), (now, a.result))
        op = self.current.get(c.client)
        if op is not None and op.seq == c.seq and a.node in op.nodes:
            self._finish(now, op, ok=True, output=a.result)

    def on_read(self, now: int, node: int, ctx: bytes, sm: KVStateMachine) -> None:
        client_s, seq_s, _ = ctx.decode().split(":")
        op = self.current.get(int(client_s))
        if op is not None and op.seq == int(seq_s) and op.kind == "read" and node in op.nodes:
            self._finish(now, op, ok=True, output=sm.read(op.key))

    def give_up_all(self, now: int) -> None:
        for op in list(self.current.values()):
            if op is not None:
                self._finish(now, op, ok=None)

    # -- the history ----------------------------------------------------------------------

    def history(self) -> list[Operation]:
        out: list[Operation] = []
        for op in self.ops:
            ok, complete, output = op.ok, op.complete, op.output
            if ok is None:
                if op.kind == "read":
                    continue
                seen = self.first_apply.get((op.client, op.seq))
                if seen is None:
                    ok = False
                else:
                    ok, complete, output = True, seen[0], seen[1]
            if ok is False:
                continue
            inp: Any = op.a if op.kind == "write" else (op.a, op.b) if op.kind == "cas" else None
            out.append(Operation(op.client, op.kind, op.key, inp, output, op.invoke, complete, ok))
        return out

    def counts(self) -> dict[str, int]:
        done = sum(1 for op in self.ops if op.ok)
        failed = sum(1 for op in self.ops if op.ok is False)
        unknown = sum(1 for op in self.ops if op.ok is None)
        return {"ops": len(self.ops), "ok": done, "failed": failed, "unknown": unknown}
