"""The `tide` commands with --url against a live server: same output and exit codes as
on the embedded store, plus watch, status and cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tidekv.cli import app
from tidekv.testing import LocalServer, local_server


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LocalServer]:
    with local_server(str(tmp_path / "db"), "lsm") as srv:
        yield srv


def tide(live: LocalServer, *args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(app, [*args, "--url", live.url], input=stdin)


def ok_json(live: LocalServer, *args: str) -> Any:
    r = tide(live, *args, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_key_commands_through_the_server(live: LocalServer, tmp_path: Path) -> None:
    v1 = ok_json(live, "put", "user/1", '{"name": "Ada"}', "--json-doc")
    assert v1["revision"] == 1 and v1["parents"] == [] and v1["shard"] == 0
    v2 = ok_json(live, "put", "user/1", '{"name": "Ada L."}', "-j", "--author", "ada")
    assert v2["parents"] == [v1["version"]]
    assert live.store.get("user/1").json() == {"name": "Ada L."}  # it is on the server

    got = ok_json(live, "get", "user/1")
    assert got["value"] == {"name": "Ada L."} and got["version"] == v2["version"]
    assert json.loads(tide(live, "get", "user/1").stdout) == {"name": "Ada L."}
    old = tide(live, "get", "user/1", "--version", v1["version"])
    assert json.loads(old.stdout) == {"name": "Ada"}
    assert json.loads(tide(live, "get", "user/1", "--as-of", "1").stdout) == {"name": "Ada"}

    hist = ok_json(live, "history", "user/1")
    assert [v["version"] for v in hist["versions"]] == [v2["version"], v1["version"]]
    assert hist["versions"][0]["author"] == "ada"
    table = tide(live, "history", "user/1")
    assert table.exit_code == 0 and v2["version"][:12] in table.stdout

    d = ok_json(live, "diff", "user/1", v1["version"], v2["version"])
    assert d["changes"] == [{"op": "replace", "path": "/name", "value": "Ada L."}]
    rb = ok_json(live, "rollback", "user/1", v1["version"])
    assert rb["parents"] == [v2["version"]]

    assert tide(live, "put", "bin", "-", stdin=b"\x00\x01").exit_code == 0
    assert tide(live, "get", "bin").stdout_bytes == b"\x00\x01"
    f = tmp_path / "doc.json"
    f.write_text('{"a": 1}')
    assert tide(live, "put", "doc", "--file", str(f), "-j").exit_code == 0
    listing = ok_json(live, "ls")
    assert [i["key"] for i in listing["items"]] == ["bin", "doc", "user/1"]
    assert [i["key"] for i in ok_json(live, "ls", "user/")["items"]] == ["user/1"]
    assert "user/1" in tide(live, "ls").stdout
    assert ok_json(live, "del", "doc")["deleted"] is True
    assert tide(live, "get", "doc").exit_code == 1


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["put", "k", "{oops", "--json-doc"], 2),
        (["put", "", "v"], 2),
        (["put", "k" * 1025, "v"], 2),
        (["put", "k", "v", "--if-match", "xyz"], 2),
        (["get", "k", "--version", "not-a-version"], 2),
        (["get", "k", "--as-of", "last tuesday"], 2),
        (["get", "missing"], 1),
        (["del", "missing"], 1),
        (["history", "missing"], 1),
        (["put", "k", "v2", "--if-absent"], 1),
        (["put", "k", "v2", "--if-match", "0" * 40], 1),
        (["cluster", "add", "2", "127.0.0.1:7071"], 1),
        (["cluster", "remove", "2"], 1),
    ],
)
def test_refusals_exit_with_their_code_one_line_and_write_nothing(
    live: LocalServer, args: list[str], code: int
) -> None:
    ok_json(live, "put", "k", "v")
    r = tide(live, *args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    assert live.store.revision == 1


def test_url_from_the_environment_and_a_list_of_urls(live: LocalServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    runner = CliRunner()
    r = runner.invoke(app, ["put", "e", "from env"], env={"TIDE_URL": f"{dead},{live.url}"})
    assert r.exit_code == 0, r.stderr
    assert live.store.get("e").text() == "from env"


def test_watch_prints_each_event(live: LocalServer) -> None:
    ok_json(live, "put", "a", '{"n": 1}', "-j")
    ok_json(live, "put", "b", "text")
    ok_json(live, "del", "a")
    r = tide(live, "watch", "--since", "0", "--count", "3")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["1", "put", "a"],
        ["2", "put", "b"],
        ["3", "delete", "a"],
    ]
    assert lines[1].endswith("text")
    events = [
        json.loads(x)
        for x in tide(live, "watch", "--since", "1", "-n", "2", "--json").stdout.splitlines()
    ]
    assert [(e["cursor"], e["key"]) for e in events] == [("2", "b"), ("3", "a")]
    only_b = tide(live, "watch", "--prefix", "b", "--since", "0", "-n", "1")
    assert only_b.stdout.split()[:3] == ["2", "put", "b"]


def test_status_shows_what_the_cluster_reports(live: LocalServer) -> None:
    ok_json(live, "put", "k", "v")
    info = ok_json(live, "status")
    assert info["shards"][0]["commit_index"] == 1
    r = tide(live, "status")
    assert r.exit_code == 0
    assert f"cluster_id: {live.store.origin}" in r.stdout
    assert "commit_index" in r.stdout and "leader" in r.stdout and "serving" in r.stdout


def test_server_commands_need_a_url() -> None:
    for args in (["watch"], ["status"], ["cluster", "remove", "2"]):
        r = CliRunner().invoke(app, args, env={"TIDE_URL": ""})
        assert r.exit_code == 2 and "give --url or set TIDE_URL" in r.stderr


def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = subprocess.run(
        [sys.executable, "-m", "tidekv.cli", "get", "k", "--url", url],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert r.stderr.decode() == f"error: cannot reach {url}: connection refused\n"
    assert not (tmp_path / "tide-data").exists()  # it did not fall back to a local store
