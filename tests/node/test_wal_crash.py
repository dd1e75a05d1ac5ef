"""Crash safety of the node WAL: kill -9 a writer process, reopen, check what survived.

A child process (``wal_crash_writer.py``) performs the seeded op sequence of
:func:`~.wal_crash_writer.plan` on several groups (appends with conflicting tails,
hard states, compactions, installed snapshots; small segments, so rotations and
checkpoints happen) and prints the number of ops done after every ``sync`` returns. The
parent SIGKILLs it after a seeded number of acknowledgements plus a seeded pause (so the
kill lands anywhere: between syncs, inside a write, inside a checkpoint), reopens the
log and checks:

* every acknowledged op is there: the logs equal MemoryStorage fed exactly the first
  ``k`` ops, for one ``k`` between the last acknowledgement and the next sync (the ops
  after the acknowledgement were written by a sync that may or may not have finished;
  a record is whole or cut, never half-served);
* every entry's payload is intact (it names its group, index and term);
* the groups of earlier rounds are exactly as they were (rounds share the directory,
  so each round also recovers from the previous crash and writes on top of it).

A kill -9 keeps the OS page cache: this checks the WAL's own recovery logic, not power
loss. Replay a failure with ``TIDEKV_CRASH_SEED=<seed printed in the failure>``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from tidekv.node import wal as walmod
from tidekv.node.logstore import NodeLog
from tidekv.raft import MemoryStorage

from .wal_crash_writer import CRASH_SEGMENT_SIZE, Op, answers, apply_model, payload, plan

WRITER = Path(__file__).with_name("wal_crash_writer.py")
BASE_SEED = int(os.environ.get("TIDEKV_CRASH_SEED", "20260601"))
MAX_ACKS_BEFORE_KILL = 40
GROUPS_PER_ROUND = 4
ROUNDS = 8


def run_until_killed(path: Path, seed: int, groups: list[int]) -> int:
    """Start the writer, SIGKILL it at a seeded moment; the last acknowledged op count."""
    rng = random.Random(seed)
    kill_after = rng.randint(1, MAX_ACKS_BEFORE_KILL)
    pause = rng.choice([0.0, 0.0, rng.random() * 0.005])
    errlog = path.parent / f"writer-{seed}.stderr"
    with errlog.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(seed), ",".join(map(str, groups))],
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdout is not None
        acks = 0
        acked = 0
        while acks < kill_after:
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                pytest.fail(
                    f"writer exited by itself ({proc.returncode}), seed={seed}: "
                    + errlog.read_text(errors="replace")
                )
            acked = int(line)
            acks += 1
        if pause:
            time.sleep(pause)  # lands the kill somewhere inside the next steps
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # acknowledgements already in the pipe count too
        proc.wait()
        proc.stdout.close()
    for line in rest.split(b"\n"):
        if line:
            acked = int(line)
    assert proc.returncode == -signal.SIGKILL
    return acked


def model_states(seed: int, groups: list[int], acked: int) -> list[tuple[int, dict[int, Any]]]:
    """``(k, answers per group)`` for every k from ``acked`` to the next sync."""
    models = {g: MemoryStorage() for g in groups}
    ops = plan(seed, groups)
    for op in islice(ops, acked):
        if op.kind != "sync":
            apply_model(models[op.group], op)

    def snap() -> dict[int, Any]:
        return {g: answers(m, all_ranges=False) for g, m in models.items()}

    states = [(acked, snap())]
    k = acked
    for op in ops:
        k += 1
        if op.kind == "sync":
            break
        apply_model(models[op.group], op)
        states.append((k, snap()))
    return states


def check_payloads(log: NodeLog, groups: list[int], where: str) -> None:
    for g in groups:
        gs = log.group(g)
        for e in gs.entries(gs.first_index(), gs.last_index() + 1):
            assert e.data == payload(g, e.index, e.term, len(e.data)), f"bad entry {e} ({where})"


def test_kill9_during_group_commits(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    before: dict[int, Any] = {}
    checkpoints: set[int] = set()  # ids of checkpoint segments found after a round
    for r in range(ROUNDS):
        seed = BASE_SEED + r
        groups = [100 * (r + 1) + j for j in range(GROUPS_PER_ROUND)]
        where = f"seed={seed} round={r}"
        acked = run_until_killed(path, seed, groups)
        log = NodeLog(path, max_segment_size=CRASH_SEGMENT_SIZE)  # must open after the kill
        try:
            got = {g: answers(log.group(g), all_ranges=False) for g in groups}
            matches = [k for k, want in model_states(seed, groups, acked) if want == got]
            assert matches, f"logs are not the first k ops for any k >= {acked} ({where})"
            check_payloads(log, groups, where)
            earlier = {g: answers(log.group(g), all_ranges=False) for g in before}
            assert earlier == before, f"earlier rounds' logs changed ({where})"
            before.update(got)
            assert set(log.group_ids()) == set(before), where
            checkpoints.update(int(p.name[:10]) for p in path.glob("*.wal") if _is_checkpoint(p))
        finally:
            log.close()
    assert len(checkpoints) >= ROUNDS // 2  # most rounds wrote checkpoints (and survived)


def _is_checkpoint(p: Path) -> bool:
    flags = walmod.read_segment_header(p.read_bytes(), int(p.name[:10]))
    return flags is not None and bool(flags & walmod.FLAG_CHECKPOINT)


def test_checks_catch_a_lost_op(tmp_path: Path) -> None:
    """The state check fails when the log lacks an acknowledged op."""
    seed, groups = 5, [1, 2]
    ops = list(islice(plan(seed, groups), 200))
    syncs = [i + 1 for i, op in enumerate(ops) if op.kind == "sync"]
    acked = syncs[3]
    states = model_states(seed, groups, acked)
    models = {g: MemoryStorage() for g in groups}
    dropped: Op | None = None
    for op in ops[:acked]:
        if op.kind == "append" and dropped is None:
            dropped = op  # lose the first append
            continue
        if op.kind != "sync":
            try:
                apply_model(models[op.group], op)
            except Exception:
                break
    got = {g: answers(m, all_ranges=False) for g, m in models.items()}
    assert dropped is not None
    assert not [k for k, want in states if want == got]
