"""A node that does not lead forwards the request to the leader and relays the answer
verbatim; a request is forwarded at most once."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tidekv.errors import NotLeader
from tidekv.http import create_app
from tidekv.testing import LocalServer, ServerThread

RELAYED = ("content-type", "etag", "x-tide-version", "x-tide-revision", "x-tide-hlc")


class Follower:
    """The one fake: a node that knows who leads (or not) and serves nothing itself."""

    def __init__(self, node_id: int, leader_url: str | None) -> None:
        self.node_id = node_id
        self.leader_url = leader_url

    def _not_leader(self) -> NotLeader:
        return NotLeader(
            f"node {self.node_id} does not lead shard 0", leader=1, leader_url=self.leader_url
        )

    async def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise self._not_leader()

    put = get = delete = rollback = scan = history = diff = _refuse
    cluster_info = add_node = remove_node = _refuse

    def watch(self, **kwargs: Any) -> Any:
        raise self._not_leader()

    async def ready(self) -> bool:
        return False

    def metrics_text(self) -> bytes:
        return b""


def serve_follower(node_id: int, leader_url: str | None) -> ServerThread:
    return ServerThread(create_app(Follower(node_id, leader_url)))  # type: ignore[arg-type]


@pytest.fixture
def follower(live: LocalServer) -> Iterator[ServerThread]:
    with serve_follower(2, live.url) as srv:
        yield srv


def test_a_write_lands_on_the_leader_and_the_answer_is_the_leaders(
    live: LocalServer, follower: ServerThread
) -> None:
    h = {"Idempotency-Key": "fwd-1", "Content-Type": "application/json"}
    via = httpx.put(follower.url + "/v1/kv/f/1", content=b'{"a": 1}', headers=h)
    assert via.status_code == 200
    assert via.headers["x-tide-forwarded-by"] == "2"
    assert live.store.get("f/1").json() == {"a": 1}
    # the leader answers the same request (its retry) with the very same response
    direct = httpx.put(live.url + "/v1/kv/f/1", content=b'{"a": 1}', headers=h)
    assert via.content == direct.content
    assert via.headers["etag"] == direct.headers["etag"]
    assert live.store.revision == 1

    got, mine = httpx.get(follower.url + "/v1/kv/f/1"), httpx.get(live.url + "/v1/kv/f/1")
    assert got.status_code == mine.status_code == 200 and got.content == mine.content
    assert [got.headers[h] for h in RELAYED] == [mine.headers[h] for h in RELAYED]

    cas = httpx.put(
        follower.url + "/v1/kv/f/1", content=b"x", headers={"If-Match": f'"{"0" * 40}"'}
    )
    assert cas.status_code == 412 and cas.json()["error"]["code"] == "precondition_failed"
    missing = httpx.get(follower.url + "/v1/kv/nope")
    assert missing.status_code == 404
    assert missing.content == httpx.get(live.url + "/v1/kv/nope").content
    rb = httpx.post(follower.url + "/v1/kv/f/1/rollback", json={"to": via.json()["version"]})
    assert rb.status_code == 200 and rb.json()["parents"] == [via.json()["version"]]
    assert httpx.get(follower.url + "/v1/kv?prefix=f/").json()["items"][0]["key"] == "f/1"
    assert httpx.get(follower.url + "/v1/cluster").json()["nodes"][0]["id"] == 1


def test_a_watch_is_relayed(live: LocalServer, follower: ServerThread) -> None:
    httpx.put(live.url + "/v1/kv/w", content=b"1")
    httpx.put(live.url + "/v1/kv/w", content=b"2")
    with httpx.stream(
        "GET", follower.url + "/v1/watch", headers={"Last-Event-ID": "1"}, timeout=30
    ) as s:
        assert s.status_code == 200 and s.headers["x-tide-forwarded-by"] == "2"
        lines = s.iter_lines()
        assert next(lines) == "id: 2"
        event = json.loads(next(lines).removeprefix("data: "))
    assert event["revision"] == 2 and event["value_b64"] == "Mg=="


def test_a_request_is_forwarded_at_most_once() -> None:
    ports = []
    for _ in range(2):  # reserve two ports so each node can name the other
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    a = ServerThread(create_app(Follower(1, f"http://127.0.0.1:{ports[1]}")), port=ports[0])  # type: ignore[arg-type]
    b = ServerThread(create_app(Follower(2, f"http://127.0.0.1:{ports[0]}")), port=ports[1])  # type: ignore[arg-type]
    with a, b:
        r = httpx.put(a.url + "/v1/kv/k", content=b"v")
        assert r.status_code == 503
        err = r.json()["error"]
        assert err["code"] == "not_leader" and "already forwarded by 1" in err["message"]
        assert r.headers["x-tide-forwarded-by"] == "1"  # b's refusal, relayed by a
        direct = httpx.get(a.url + "/v1/kv/k", headers={"X-Tide-Forwarded-By": "elsewhere"})
        assert direct.status_code == 503
        assert "already forwarded by elsewhere" in direct.json()["error"]["message"]


def test_no_known_leader_or_an_unreachable_one_is_503() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when we forward
    with serve_follower(3, None) as lost, serve_follower(4, dead) as cut_off:
        r = httpx.get(lost.url + "/v1/kv/k")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_leader"
        assert r.json()["error"]["leader_url"] is None
        r = httpx.put(cut_off.url + "/v1/kv/k", content=b"v")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        assert dead in r.json()["error"]["message"]
        assert httpx.get(lost.url + "/ready").status_code == 503
