"""Free loopback ports for clusters of real processes (HTTP port p and peer port p + 100).

Two things made "pick a random free port" clash under load, and this module rules both out:

* **Other processes picking at the same time** (several test runs on one machine): a port
  that was free when checked is taken before the node binds it. Ports come in blocks of
  :data:`BLOCK` (a block's first 100 are HTTP ports, the next 100 their peer ports), and a
  block is handed out only to the process holding its lock file (``flock`` on
  ``<tmp>/tidekv-ports/<base>.lock``, held until the process exits): two processes that
  use this module never get the same block. A process recycles its own blocks (oldest
  first, only when every port needed is free again), so it never runs out.
* **Outgoing connections**: every client socket takes a port of the kernel's ephemeral
  range (``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 here), so a listening
  port chosen inside it can be taken by any connection between the check and the bind (a
  node restarted on its old port, say). Blocks lie below that range.

What this cannot rule out: a program that does not use this module binding a port of a
block; every port is bind-checked when its block is handed out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from collections import deque
from typing import IO

__all__ = ["BLOCK", "free_base_port", "port_free"]

BLOCK = 200
"""Ports of one block: base..base+99 (HTTP), base+100..base+199 (their peer ports)."""
LOWEST = 10_000
MAX_HELD = 8
"""Blocks one process holds at most; past that it recycles its own, oldest first (there are
113 blocks below 32768: room for 14 processes taking ports at once)."""

_held: dict[int, IO[bytes]] = {}  # block base -> its lock file, open (locked) while we live
_order: deque[int] = deque()  # the held blocks, least recently handed out first
_rng = random.Random()


def port_free(port: int) -> bool:
    """Whether a TCP port on 127.0.0.1 can be bound now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (where client sockets bind)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # the Linux default


def _lock(base: int) -> IO[bytes] | None:
    folder = os.path.join(tempfile.gettempdir(), "tidekv-ports")
    os.makedirs(folder, exist_ok=True)
    f = open(os.path.join(folder, f"{base}.lock"), "ab")  # noqa: SIM115 - held open
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def _usable(base: int, n: int) -> bool:
    return all(port_free(base + i) and port_free(base + 100 + i) for i in range(n))


def _hand_out(base: int) -> int:
    with contextlib.suppress(ValueError):
        _order.remove(base)
    _order.append(base)
    return base


def free_base_port(n: int) -> int:
    """A base port ``p`` such that ``p..p+n-1`` and ``p+100..p+100+n-1`` are free now,
    below the ephemeral range, and reserved for this process (module docstring)."""
    if not 1 <= n <= 100:
        raise ValueError(f"a block holds 1 to 100 nodes, not {n}")
    top = min(ephemeral_low(), 65536) - BLOCK
    bases = list(range(LOWEST, top + 1, BLOCK))
    _rng.shuffle(bases)
    if len(_held) < MAX_HELD:
        for base in bases:
            if base in _held:
                continue
            lock = _lock(base)
            if lock is None:
                continue  # another process's block
            if not _usable(base, n):
                lock.close()  # something else listens there: leave it
                continue
            _held[base] = lock
            return _hand_out(base)
    for base in list(_order):  # recycle this process's own, the oldest first
        if _usable(base, n):
            return _hand_out(base)
    raise RuntimeError(f"no free block of {BLOCK} ports for {n} nodes below {top + BLOCK}")
