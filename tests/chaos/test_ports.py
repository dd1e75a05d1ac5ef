"""Port blocks for clusters of real processes (tidekv.chaos.ports): two processes that
take blocks at the same time never get the same ports, and no block reaches into the
kernel's ephemeral range (where client sockets bind)."""

from __future__ import annotations

import subprocess
import sys

from tidekv.chaos import ports
from tidekv.chaos.ports import BLOCK, MAX_HELD, ephemeral_low, free_base_port, port_free

TAKER = """
import sys
from tidekv.chaos import ports
from tidekv.chaos.ports import MAX_HELD, free_base_port
print(" ".join(str(free_base_port(3)) for _ in range(MAX_HELD)), flush=True)
sys.stdin.read()  # hold the blocks until the test lets go
"""


def test_two_processes_never_share_a_block() -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        got = []
        for p in procs:
            assert p.stdout is not None
            got.append([int(x) for x in p.stdout.readline().split()])
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(30)
    a, b = (set(g) for g in got)
    assert len(a) == len(b) == MAX_HELD  # each process's blocks are distinct
    assert not a & b, sorted(a & b)
    assert all(base % BLOCK == 0 for base in a | b)
    assert max(a | b) + BLOCK <= ephemeral_low()


def test_a_process_recycles_its_own_blocks_once_free() -> None:
    taken = [free_base_port(2) for _ in range(MAX_HELD + 3)]
    assert len(set(taken)) <= MAX_HELD  # past the cap: its own blocks again
    assert set(taken) <= set(ports._held) and len(ports._held) <= MAX_HELD
    base = taken[-1]
    assert all(port_free(base + i) and port_free(base + 100 + i) for i in range(2))
