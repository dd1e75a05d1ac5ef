"""tidekv.Client against a real server: every method, the error tree, retries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from conftest import LosingProxy, free_port

import tidekv
from tidekv.errors import (
    Conflict,
    InvalidInput,
    InvalidJSON,
    InvalidVersionId,
    KeyNotFound,
    NotFound,
    NotLeader,
    PreconditionFailed,
    Siblings,
    TideError,
    Unavailable,
    ValueTooLarge,
    VersionNotFound,
)
from tidekv.http import create_app
from tidekv.statemachine import WriteCommand
from tidekv.testing import LocalServer, ServerThread, local_server
from tidekv.versioning import HLCTimestamp


def test_put_get_delete_like_the_embedded_store(live: LocalServer, client: tidekv.Client) -> None:
    w = client.put("user/1", {"name": "Ada"})
    assert (w.key, w.parents, w.revision, w.shard, w.deleted) == ("user/1", (), 1, 0, False)
    item = client.get("user/1")
    assert item == live.store.get("user/1")  # same Item, field for field
    assert item.json() == {"name": "Ada"} and item.content_type == "application/json"
    assert item.version == w.version and item.hlc == w.hlc and item.siblings == 1

    t = client.put("note", "héllo")
    assert client.get("note").text() == "héllo"
    assert client.get("note").content_type == "text/plain; charset=utf-8"
    client.put("blob", b"\x00\x01", content_type="image/png")
    assert client.get("blob").value == b"\x00\x01"
    assert client.get("blob").content_type == "image/png"

    w2 = client.put("note", "two", if_match=t.version, author="ada")
    assert w2.parents == (t.version,)
    assert client.get("note", version=t.version).text() == "héllo"
    assert client.get("note", as_of=t.revision).text() == "héllo"
    assert client.get("note", as_of=dt.datetime.now(dt.UTC)).text() == "two"
    assert client.get("note", consistency="stale").text() == "two"

    d = client.delete("note")
    assert d.deleted and d.parents == (w2.version,) and d.to_dict()["deleted"] is True
    with pytest.raises(KeyNotFound) as exc:
        client.get("note")
    assert isinstance(exc.value, NotFound) and exc.value.details == {"key": "note"}
    assert exc.value.http_status == 404 and exc.value.code == "not_found"


def test_scan_follows_cursors_history_pages_rollback_diff(
    live: LocalServer, client: tidekv.Client
) -> None:
    for i in range(5):
        client.put(f"k/{i}", {"i": i})
    client.put("other", "x")
    assert [i.key for i in client.scan("k/", page_size=2)] == [f"k/{i}" for i in range(5)]
    assert list(client.scan("k/", page_size=2)) == list(live.store.scan("k/"))
    assert [i.key for i in client.scan(limit=3, page_size=2)] == ["k/0", "k/1", "k/2"]
    assert [i.key for i in client.scan(start="k/3", end="other")] == ["k/3", "k/4"]
    assert len(client.list_keys()) == 6

    versions = [client.put("h", n).version for n in range(5)]
    hist = client.history("h", page_size=2)
    assert hist == live.store.history("h")  # the same VersionInfo objects
    assert [v.version.id for v in hist] == versions[::-1]
    assert [v.version.id for v in client.history("h", limit=3, page_size=2)] == versions[:1:-1]
    assert [v.version.id for v in client.history("h", before=versions[2])] == versions[1::-1]

    rb = client.rollback("h", versions[0])
    assert rb.parents == (versions[-1],) and client.get("h").json() == 0
    assert client.diff("h", versions[0], versions[1]) == live.store.diff(
        "h", versions[0], versions[1]
    )
    assert client.diff("h", versions[1]).format == "json-patch"


def test_errors_come_back_as_the_exception_tree(live: LocalServer, client: tidekv.Client) -> None:
    v = client.put("k", "v").version
    client.put("k", "v2")
    with pytest.raises(PreconditionFailed) as pf:
        client.put("k", "v3", if_match=v)
    assert pf.value.details["heads"] == [client.get("k").version]
    with pytest.raises(PreconditionFailed):
        client.put("k", "v3", if_none_match=True)
    with pytest.raises(InvalidJSON):
        client.put("j", b"{nope", content_type="application/json")
    with pytest.raises(ValueTooLarge):
        client.put("big", b"x" * ((1 << 20) + 1))
    with pytest.raises(ValueTooLarge):
        client.put("k" * 2000, "v")
    with pytest.raises(InvalidVersionId):
        client.get("k", version="xyz")
    with pytest.raises(VersionNotFound):
        client.get("k", version="0" * 40)
    with pytest.raises(InvalidInput) as bad:
        client.get("k", consistency="strong")
    assert bad.value.details == {"parameter": "consistency"}
    with pytest.raises(Conflict):
        client.add_node(2, "127.0.0.1:1")
    with pytest.raises(Conflict):
        client.remove_node(2)
    with pytest.raises(InvalidInput):
        tidekv.Client("ftp://example")
    assert live.store.revision == 2  # nothing refused was written


def test_siblings_under_the_manual_policy(tmp_path: Any) -> None:
    with (
        local_server(str(tmp_path), "lsm", resolver="manual") as live,
        tidekv.Client(live.url) as client,
    ):
        base = client.put("s", "base")
        for origin in ("site-a", "site-b"):
            live.store.sm.apply(
                WriteCommand(
                    key="s",
                    value=origin.encode(),
                    content_type="text/plain",
                    hlc=HLCTimestamp(base.hlc.wall + len(origin), 0),
                    origin=origin,
                    parents=(base.version,),
                )
            )
        with pytest.raises(Siblings) as exc:
            client.get("s")
        assert len(exc.value.details["siblings"]) == 2 and exc.value.http_status == 300


def test_cluster_health_ready(live: LocalServer, client: tidekv.Client) -> None:
    info = client.cluster()
    assert info["nodes"][0]["id"] == 1 and info["shards"][0]["leader"] == 1
    assert client.health() and client.ready()
    with tidekv.Client(f"127.0.0.1:{free_port()}", retries=0) as dead:
        assert not dead.health() and not dead.ready()


def test_unreachable_server_is_unavailable_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with tidekv.Client(url, retries=2) as client, pytest.raises(Unavailable) as exc:
        client.put("k", "v")
    assert exc.value.message == f"cannot reach {url}: connection refused"


def test_retries_rotate_to_a_url_that_answers(live: LocalServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with tidekv.Client(f"{dead},{live.url}", retries=3) as client:
        assert client.put("k", "v").revision == 1
        assert client.get("k").text() == "v"


class NoLeader:
    """The fake for 503: a node that knows of no leader."""

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        raise NotLeader("no leader elected yet", leader=None, leader_url=None)

    def metrics_text(self) -> bytes:
        return b""


def test_503_is_retried_on_the_next_url_and_4xx_never(live: LocalServer) -> None:
    with ServerThread(create_app(NoLeader())) as electing:  # type: ignore[arg-type]
        with tidekv.Client([electing.url], retries=1) as client, pytest.raises(NotLeader):
            client.put("k", "v")
        with tidekv.Client([electing.url, live.url], retries=2) as client:
            assert client.put("k", "v").revision == 1
            with pytest.raises(PreconditionFailed):
                client.put("k", "w", if_none_match=True)
    metrics = httpx.get(live.url + "/metrics").text
    assert 'tidekv_http_requests_total{method="PUT",route="kv",status="412"} 1.0' in metrics


def test_a_write_whose_answer_was_lost_is_retried_without_a_second_version(
    live: LocalServer,
) -> None:
    proxy = LosingProxy(live.port, lose=2)
    try:
        with tidekv.Client(proxy.url, retries=3) as client:
            w = client.put("once", {"n": 1})
            d = client.delete("once")
    finally:
        proxy.close()
    assert proxy.relayed == 4  # the put thrice (two answers lost), then the delete
    history = live.store.history("once")
    assert [vi.version.id for vi in history] == [d.version, w.version]
    assert live.store.revision == 2


def test_errors_keep_unknown_codes_and_statuses() -> None:
    from tidekv.client import error_from_body

    exc = error_from_body(418, {"error": {"code": "teapot", "message": "short and stout"}})
    assert type(exc) is TideError and exc.code == "teapot" and exc.http_status == 418
    exc = error_from_body(409, {"error": {"code": "new_conflict", "message": "m", "x": 1}})
    assert isinstance(exc, Conflict) and exc.details == {"x": 1}
    exc = error_from_body(502, None, "<html>bad gateway</html>")
    assert exc.http_status == 502 and "bad gateway" in exc.message
