"""Writes sent to a follower, on real node processes: the follower proposes them through
Raft (the leader receives the proposal over the peer transport, stamps its HLC time and
replicates it), and answers once it applies the entry itself."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidekv.versioning import HLCTimestamp

from .proc_cluster import ProcCluster, running

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    with running(tmp_path_factory.mktemp("trio"), 3) as c:
        yield c


def follower_of(c: ProcCluster, leader: int) -> int:
    return next(i for i in (1, 2, 3) if i != leader)


def hlc(s: str) -> HLCTimestamp:
    return HLCTimestamp.parse(s)


def test_a_follower_answers_a_write_itself_and_the_leader_orders_its_time(
    trio: ProcCluster,
) -> None:
    lead = trio.leader()
    f = follower_of(trio, lead)
    first = trio.put(lead, "fw/a", b"one")
    assert first.status_code == 200, first.text
    via = trio.put(f, "fw/a", b"two")
    assert via.status_code == 200, via.text
    assert "x-tide-forwarded-by" not in via.headers  # not an HTTP relay
    w1, w2 = first.json(), via.json()
    assert w2["parents"] == [w1["version"]]
    assert w2["revision"] > w1["revision"]
    assert hlc(w2["hlc"]) > hlc(w1["hlc"])
    assert via.headers["etag"] == f'"{w2["version"]}"'
    for i in (1, 2, 3):
        got = trio.get(i, "fw/a")
        assert got.status_code == 200 and got.content == b"two"


def test_retries_through_a_follower_create_one_version(trio: ProcCluster) -> None:
    lead = trio.leader()
    f = follower_of(trio, lead)
    h = {"idempotency-key": "fw-retry-1"}
    a = trio.put(f, "fw/idem", b"x", **h)
    b = trio.put(f, "fw/idem", b"x", **h)
    c = trio.put(lead, "fw/idem", b"x", **h)
    assert a.status_code == b.status_code == c.status_code == 200
    assert a.json() == b.json() == c.json()
    hist = trio.http.get(trio.url(lead) + "/v1/kv/fw/idem/history").json()
    assert len(hist["versions"]) == 1


def test_preconditions_and_bad_input_through_a_follower(trio: ProcCluster) -> None:
    lead = trio.leader()
    f = follower_of(trio, lead)
    assert trio.put(f, "fw/cas", b"v1").status_code == 200
    stale = trio.put(f, "fw/cas", b"v2", **{"if-match": '"' + "0" * 40 + '"'})
    assert stale.status_code == 412, stale.text
    assert stale.json()["error"]["code"] == "precondition_failed"
    absent = trio.put(f, "fw/cas", b"v2", **{"if-none-match": "*"})
    assert absent.status_code == 412
    assert trio.get(lead, "fw/cas").content == b"v1"
    bad = trio.put(f, "fw/cas", b"v3", **{"if-match": "nope"})
    assert bad.status_code == 400


def test_concurrent_writes_through_both_followers_all_land(trio: ProcCluster) -> None:
    lead = trio.leader()
    followers = [i for i in (1, 2, 3) if i != lead]

    def write(n: int) -> int:
        with httpx.Client(timeout=30) as http:
            node = followers[n % 2]
            r = http.put(trio.url(node) + f"/v1/kv/fw/many/{n}", content=b"%d" % n)
            return r.status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(write, range(200)))
    assert statuses == [200] * 200
    listed = trio.http.get(
        trio.url(lead) + "/v1/kv", params={"prefix": "fw/many/", "limit": "1000"}
    ).json()
    assert len(listed["items"]) == 200


def test_writes_through_a_follower_survive_a_leader_kill(tmp_path: Path) -> None:
    with running(tmp_path, 3) as c:
        lead = c.leader()
        f = follower_of(c, lead)
        acked: dict[str, bytes] = {}
        for n in range(20):
            r = c.put(f, f"fk/{n}", b"before-%d" % n)
            assert r.status_code == 200, r.text
            acked[f"fk/{n}"] = b"before-%d" % n
        c.kill(lead)
        # retry each write with its Idempotency-Key until the new leader takes it
        for n in range(20, 30):
            key, value = f"fk/{n}", b"after-%d" % n
            deadline = time.monotonic() + 60
            while True:
                try:
                    r = c.put(f, key, value, **{"idempotency-key": f"fk-{n}"})
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 200:
                    break
                if r is not None:  # only "try again" answers while the leader changes
                    assert r.status_code == 503, r.text
                    assert r.json()["error"]["code"] in ("not_leader", "timeout", "unavailable")
                assert time.monotonic() < deadline, "no leader took the write in time"
                time.sleep(0.1)
            acked[key] = value
        new_lead = c.leader([i for i in (1, 2, 3) if i != lead])
        for key, value in acked.items():
            got = c.get(new_lead, key)
            assert got.status_code == 200 and got.content == value, key
            versions = c.http.get(c.url(new_lead) + f"/v1/kv/{key}/history").json()["versions"]
            assert len(versions) == 1, key
