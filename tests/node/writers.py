"""Load for the fault tests: writers that remember every acknowledged write, and the
checks that those writes are readable."""

from __future__ import annotations

import threading
import time

import httpx

from .proc_cluster import DEADLINE, ProcCluster


class Writer(threading.Thread):
    """Writes w-<n> keys round-robin over the live nodes; remembers what was acked."""

    def __init__(self, cluster: ProcCluster, prefix: str = "w") -> None:
        super().__init__(daemon=True)
        self.c = cluster
        self.prefix = prefix
        self.acked: dict[str, tuple[bytes, float]] = {}
        self.errors = 0
        self._halt = threading.Event()
        self.client = httpx.Client(timeout=3.0)

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            n += 1
            key = f"{self.prefix}-{n}"
            value = f"value-{n}".encode()
            live = [i for i in range(1, self.c.n + 1) if self.c.alive(i)]
            if not live:
                time.sleep(0.05)
                continue
            node = live[n % len(live)]
            try:
                r = self.client.put(
                    self.c.url(node) + "/v1/kv/" + key,
                    content=value,
                    headers={"content-type": "application/octet-stream"},
                )
            except httpx.HTTPError:
                self.errors += 1
                time.sleep(0.02)
                continue
            if r.status_code == 200:
                self.acked[key] = (value, time.monotonic())
            else:
                self.errors += 1
                time.sleep(0.02)

    def wait_acked(self, count: int, after: float = 0.0) -> float:
        """Wait until ``count`` writes were acked after time ``after``; returns the time
        of the first of them."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            times = sorted(t for _v, t in list(self.acked.values()) if t > after)
            if len(times) >= count:
                return times[0]
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} writes acked after the fault\n{self.c.logs()}")

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        self.client.close()


def assert_all_readable(c: ProcCluster, node: int, acked: dict[str, tuple[bytes, float]]) -> None:
    missing = []
    for key, (value, _t) in acked.items():
        r = c.get(node, key)
        if r.status_code != 200 or r.content != value:
            missing.append((key, r.status_code))
    assert not missing, f"{len(missing)} acknowledged writes not readable: {missing[:5]}"


def wait_caught_up(c: ProcCluster, node: int, acked: dict[str, tuple[bytes, float]]) -> None:
    """``node`` serves every acknowledged write from its own replica (stale reads)."""
    deadline = time.monotonic() + DEADLINE
    pending = dict(acked)
    while pending and time.monotonic() < deadline:
        for key, (value, _t) in list(pending.items()):
            try:
                r = c.get(node, key, consistency="stale")
            except httpx.HTTPError:  # still starting
                break
            if r.status_code == 200 and r.content == value:
                del pending[key]
        if pending:
            time.sleep(0.1)
    assert not pending, f"node {node} misses {len(pending)} writes\n{c.logs()}"
