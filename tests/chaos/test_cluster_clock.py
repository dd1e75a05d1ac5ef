"""The clock-jump fault on a real node: the HLC's wall clock moves, the HLC never goes back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tidekv.chaos.cluster import Cluster
from tidekv.chaos.net import Loopback
from tidekv.chaos.ports import free_base_port


def _hlc(resp: httpx.Response) -> tuple[int, int]:
    wall, _, logical = str(resp.json()["hlc"]).partition(".")
    return int(wall), int(logical or 0)


def test_a_clock_jump_moves_the_hlc_forward_and_never_back(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1, Loopback(free_base_port(2)), clocks=True)
    try:
        c.prepare()
        c.start_all()
        c.wait_leader(60)
        url = c.url(1) + "/v1/kv/k"
        put = lambda v: c.http.put(url, content=v, timeout=10)  # noqa: E731
        r0 = put(b"0")
        assert r0.status_code == 200
        real_ms = time.time_ns() // 1_000_000
        assert abs(_hlc(r0)[0] - real_ms) < 60_000  # no offset yet
        c.set_clock(1, 3600.0)
        time.sleep(0.3)  # the launcher re-reads the file at most every 100 ms
        r1 = put(b"1")
        assert _hlc(r1)[0] - real_ms > 3_000_000  # an hour ahead
        c.set_clock(1, -3600.0)
        time.sleep(0.3)
        r2 = put(b"2")
        assert _hlc(r2) > _hlc(r1)  # the wall clock went back two hours; the HLC did not
        assert _hlc(r2)[0] == _hlc(r1)[0]  # it holds the wall time and counts logically
    finally:
        c.close()
