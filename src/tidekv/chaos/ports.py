"""Free loopback ports for the loopback fallback (HTTP port p and peer port p + 100)."""

from __future__ import annotations

import random
import socket

__all__ = ["free_base_port", "port_free"]


def port_free(port: int) -> bool:
    """Whether a TCP port on 127.0.0.1 can be bound now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(n: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 40000)
        if all(port_free(base + i) and port_free(base + i + 100) for i in range(n)):
            return base
    raise RuntimeError("no free ports")
