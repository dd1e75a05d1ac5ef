"""Every route of API v1 through real HTTP, with the shapes of shared/API.md."""

from __future__ import annotations

import base64
import datetime as dt
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidekv.openapi import openapi_document
from tidekv.statemachine import WriteCommand
from tidekv.testing import LocalServer, local_server
from tidekv.versioning import HLCTimestamp

WRITE_FIELDS = {"key", "version", "parents", "revision", "shard", "hlc", "deleted"}
HISTORY_FIELDS = {
    "version",
    "parents",
    "hlc",
    "time",
    "origin",
    "author",
    "deleted",
    "revision",
    "size",
    "content_type",
}


def put_json(http: httpx.Client, key: str, doc: object, **headers: str) -> httpx.Response:
    import json

    return http.put(
        "/v1/kv/" + quote(key, safe=""),
        content=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


def test_put_and_get_keep_the_value_and_its_content_type(http: httpx.Client) -> None:
    r = put_json(http, "user/1", {"name": "Ada"})
    assert r.status_code == 200
    w = r.json()
    assert set(w) == WRITE_FIELDS
    assert w["key"] == "user/1" and w["parents"] == [] and w["revision"] == 1
    assert w["shard"] == 0 and w["deleted"] is False
    assert r.headers["etag"] == f'"{w["version"]}"'

    g = http.get("/v1/kv/user/1")  # a literal slash is part of the key
    assert g.status_code == 200
    assert g.json() == {"name": "Ada"}
    assert g.headers["content-type"] == "application/json"
    assert g.headers["etag"] == f'"{w["version"]}"'
    assert g.headers["x-tide-version"] == w["version"]
    assert g.headers["x-tide-revision"] == "1"
    assert g.headers["x-tide-hlc"] == w["hlc"]
    assert "x-tide-siblings" not in g.headers

    b = http.put("/v1/kv/blob", content=b"\x00\xff", headers={"Content-Type": "image/png"})
    assert b.status_code == 200
    g = http.get("/v1/kv/blob")
    assert g.content == b"\x00\xff" and g.headers["content-type"] == "image/png"
    raw = http.put("/v1/kv/raw", content=b"no type")
    assert raw.status_code == 200
    assert http.get("/v1/kv/raw").headers["content-type"] == "application/octet-stream"


def test_reads_by_version_revision_time_and_consistency(http: httpx.Client) -> None:
    v1 = put_json(http, "k", {"n": 1}).json()
    v2 = put_json(http, "k", {"n": 2}).json()
    assert v2["parents"] == [v1["version"]]
    assert http.get("/v1/kv/k", params={"version": v1["version"]}).json() == {"n": 1}
    assert http.get("/v1/kv/k", params={"as_of": "1"}).json() == {"n": 1}
    assert http.get("/v1/kv/k", params={"as_of": "2"}).json() == {"n": 2}
    wall_ms = int(v1["hlc"].split(".")[0])
    at = dt.datetime.fromtimestamp(wall_ms / 1000, dt.UTC).isoformat()
    assert http.get("/v1/kv/k", params={"as_of": at}).status_code == 200
    for level in ("linearizable", "lease", "follower", "stale"):
        assert http.get("/v1/kv/k", params={"consistency": level}).json() == {"n": 2}


def test_keys_with_slashes_percent_escapes_and_unicode(http: httpx.Client) -> None:
    # an encoded slash never splits a key: "x/history" is a key, not x's history
    assert http.put("/v1/kv/x%2Fhistory", content=b"a key").status_code == 200
    assert http.get("/v1/kv/x%2Fhistory").content == b"a key"
    assert http.get("/v1/kv/x/history").status_code == 404  # history of "x": absent
    assert http.get("/v1/kv/history").status_code == 404  # the key "history": absent
    assert http.put("/v1/kv/history", content=b"k").status_code == 200
    key = "naïve/ключ 🌊"
    assert http.put("/v1/kv/" + quote(key, safe=""), content=b"u").status_code == 200
    listed = http.get("/v1/kv").json()["items"]
    assert {i["key"] for i in listed} == {"x/history", "history", key}


def test_list_pages_with_cursor_prefix_and_range(http: httpx.Client) -> None:
    put_json(http, "a/1", {"i": 1})
    http.put("/v1/kv/a/2", content=b"bytes\x00", headers={"Content-Type": "image/x"})
    put_json(http, "a/3", [3])
    put_json(http, "b/1", "s")
    page = http.get("/v1/kv", params={"prefix": "a/", "limit": "2"}).json()
    assert set(page) == {"items", "next"}
    first = page["items"][0]
    assert set(first) >= {"key", "version", "revision", "content_type", "value"}
    assert first["value"] == {"i": 1} and first["content_type"] == "application/json"
    assert base64.b64decode(page["items"][1]["value_b64"]) == b"bytes\x00"
    assert "value" not in page["items"][1]
    assert page["next"]
    rest = http.get("/v1/kv", params={"prefix": "a/", "limit": "2", "cursor": page["next"]})
    assert [i["key"] for i in rest.json()["items"]] == ["a/3"]
    assert rest.json()["next"] is None
    ranged = http.get("/v1/kv", params={"start": "a/2", "end": "b/1"}).json()["items"]
    assert [i["key"] for i in ranged] == ["a/2", "a/3"]
    assert http.get("/v1/kv", params={"limit": "0"}).json()["items"] == []


def test_history_newest_first_with_paging(http: httpx.Client) -> None:
    vs = [
        put_json(http, "h", {"n": n}, **{"X-Tide-Author": "ada"}).json()["version"]
        for n in range(3)
    ]
    http.delete("/v1/kv/h")
    body = http.get("/v1/kv/h/history").json()
    assert body["key"] == "h"
    versions = body["versions"]
    assert len(versions) == 4
    assert all(set(v) >= HISTORY_FIELDS for v in versions)
    assert versions[0]["deleted"] is True
    assert [v["version"] for v in versions[1:]] == vs[::-1]
    assert versions[1]["author"] == "ada"
    assert [v["revision"] for v in versions] == [4, 3, 2, 1]
    page = http.get("/v1/kv/h/history", params={"limit": "2"}).json()
    assert len(page["versions"]) == 2 and page["next"] == page["versions"][1]["version"]
    more = http.get("/v1/kv/h/history", params={"limit": "2", "before": page["next"]}).json()
    assert [v["version"] for v in more["versions"]] == vs[:2][::-1]


def test_delete_writes_a_tombstone(http: httpx.Client) -> None:
    v1 = put_json(http, "d", {"x": 1}).json()
    r = http.delete("/v1/kv/d")
    assert r.status_code == 200
    w = r.json()
    assert set(w) == WRITE_FIELDS and w["deleted"] is True and w["parents"] == [v1["version"]]
    g = http.get("/v1/kv/d")
    assert g.status_code == 404
    assert g.json()["error"]["code"] == "not_found"
    assert http.get("/v1/kv/d", params={"version": v1["version"]}).json() == {"x": 1}
    again = http.delete("/v1/kv/d")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


def test_rollback_and_diff(http: httpx.Client) -> None:
    v1 = put_json(http, "doc", {"name": "Ada"}).json()["version"]
    v2 = put_json(http, "doc", {"name": "Ada L."}).json()["version"]
    d = http.get("/v1/kv/doc/diff", params={"from": v1, "to": v2})
    assert d.json() == {
        "format": "json-patch",
        "changes": [{"op": "replace", "path": "/name", "value": "Ada L."}],
    }
    assert http.get("/v1/kv/doc/diff", params={"from": v1}).json() == d.json()
    rb = http.post("/v1/kv/doc/rollback", json={"to": v1})
    assert rb.status_code == 200
    w = rb.json()
    assert set(w) == WRITE_FIELDS and w["parents"] == [v2]
    assert rb.headers["etag"] == f'"{w["version"]}"'
    assert http.get("/v1/kv/doc").json() == {"name": "Ada"}


def test_preconditions(http: httpx.Client) -> None:
    v1 = put_json(http, "c", 1).json()["version"]
    created = http.put("/v1/kv/new", content=b"x", headers={"If-None-Match": "*"})
    assert created.status_code == 200
    exists = http.put("/v1/kv/new", content=b"y", headers={"If-None-Match": "*"})
    assert exists.status_code == 412 and exists.json()["error"]["code"] == "precondition_failed"
    ok = put_json(http, "c", 2, **{"If-Match": f'"{v1}"'})
    assert ok.status_code == 200
    stale = put_json(http, "c", 3, **{"If-Match": f'"{v1}"'})
    assert stale.status_code == 412
    assert stale.json()["error"]["heads"] == [ok.json()["version"]]
    gone = http.delete("/v1/kv/c", headers={"If-Match": f'"{v1}"'})
    assert gone.status_code == 412
    assert http.get("/v1/kv/c").json() == 2


def test_idempotency_key_returns_the_first_result(live: LocalServer, http: httpx.Client) -> None:
    h = {"Idempotency-Key": "put-once-42", "Content-Type": "text/plain"}
    first = http.put("/v1/kv/i", content=b"one", headers=h)
    again = http.put("/v1/kv/i", content=b"one", headers=h)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert len(http.get("/v1/kv/i/history").json()["versions"]) == 1
    assert live.store.revision == 1
    # a failed precondition is an outcome too: the retry gets the same 412
    bad = {"Idempotency-Key": "cas-7", "If-Match": f'"{"0" * 40}"'}
    assert http.put("/v1/kv/i", content=b"x", headers=bad).status_code == 412
    assert http.put("/v1/kv/i", content=b"x", headers=bad).status_code == 412
    d1 = http.delete("/v1/kv/i", headers={"Idempotency-Key": "del-1"})
    d2 = http.delete("/v1/kv/i", headers={"Idempotency-Key": "del-1"})
    assert d1.json() == d2.json() and live.store.revision == 2


def _sibling(live: LocalServer, key: str, value: bytes, origin: str, parent: str) -> str:
    store = live.store
    base = store.get(key, version=parent)
    return store.sm.apply(
        WriteCommand(
            key=key,
            value=value,
            content_type="text/plain",
            hlc=HLCTimestamp(base.hlc.wall + 1000 + len(origin), 0),
            origin=origin,
            parents=(parent,),
        )
    ).version


def test_siblings_header_under_lww(live: LocalServer, http: httpx.Client) -> None:
    base = http.put("/v1/kv/s", content=b"base").json()["version"]
    _sibling(live, "s", b"a", "site-a", base)
    _sibling(live, "s", b"bb", "site-bb", base)
    g = http.get("/v1/kv/s")
    assert g.status_code == 200 and g.headers["x-tide-siblings"] == "2"
    assert g.content == b"bb"  # the later HLC wins
    listed = http.get("/v1/kv").json()["items"][0]
    assert listed["siblings"] == 2


def test_manual_policy_answers_300_with_the_siblings(tmp_path: object) -> None:
    with local_server(str(tmp_path), "lsm", resolver="manual") as live:
        http = httpx.Client(base_url=live.url)
        base = http.put("/v1/kv/s", content=b"base").json()["version"]
        a = _sibling(live, "s", b"a", "site-a", base)
        b = _sibling(live, "s", b"b", "site-bb", base)
        g = http.get("/v1/kv/s")
        assert g.status_code == 300
        err = g.json()["error"]
        assert err["code"] == "siblings" and sorted(err["siblings"]) == sorted([a, b])
        http.close()


def test_cluster_routes(http: httpx.Client) -> None:
    c = http.get("/v1/cluster")
    assert c.status_code == 200
    info = c.json()
    assert set(info) >= {"cluster_id", "nodes", "shards"}
    assert set(info["nodes"][0]) >= {"id", "address", "state"}
    assert set(info["shards"][0]) >= {"id", "leader", "term", "replicas", "commit_index"}
    join = http.post("/v1/cluster/nodes", json={"id": 2, "address": "127.0.0.1:7071"})
    assert join.status_code == 409 and join.json()["error"]["code"] == "conflict"
    leave = http.delete("/v1/cluster/nodes/2")
    assert leave.status_code == 409 and leave.json()["error"]["code"] == "conflict"


def test_health_ready_metrics(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    assert http.get("/ready").json() == {"ready": True}
    http.put("/v1/kv/m", content=b"1")
    http.get("/v1/kv/missing")
    m = http.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(m.text)}
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["tidekv_http_requests"].samples
        if s.name == "tidekv_http_requests_total"
    }
    assert requests[("kv", "PUT", "200")] == 1
    assert requests[("kv", "GET", "404")] == 1
    assert "tidekv_http_request_duration_seconds" in families
    assert families["tidekv_store_revision"].samples[0].value == 1


def test_openapi_describes_exactly_the_routes_of_the_app(live: LocalServer) -> None:
    served = httpx.get(live.url + "/openapi.json").json()
    assert served == openapi_document()
    assert served["openapi"].startswith("3.1")
    paths = served["paths"]
    app_routes = {(r.template, m.lower()) for r in live.app.routes for m in r.methods}
    doc_routes = {(p, m) for p, item in paths.items() for m in item if m not in ("parameters",)}
    assert app_routes == doc_routes
    for route in live.app.routes:
        for method in route.methods:
            op = paths[route.template][method.lower()]
            documented = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            assert documented == set(route.query[method]), (route.template, method)
            codes = {str(s) for s in op["responses"]}
            assert "200" in codes
    error = served["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]


@pytest.mark.parametrize("engine", ["lsm"])
def test_large_value_at_the_limit_is_accepted(http: httpx.Client) -> None:
    value = b"v" * (1 << 20)
    assert http.put("/v1/kv/big", content=value).status_code == 200
    assert http.get("/v1/kv/big").content == value
