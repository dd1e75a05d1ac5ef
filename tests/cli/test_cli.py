"""The `tide` command line, run as a real process: output, --json and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def tide(*args: str, path: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tidekv.cli", *args, "--path", str(path)],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def ok_json(*args: str, path: Path) -> dict:  # type: ignore[type-arg]
    r = tide(*args, "--json", path=path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_put_get_history_diff_rollback_ls_del(tmp_path: Path) -> None:
    db = tmp_path / "db"
    v1 = ok_json("put", "user/1", '{"name": "Ada"}', "--json-doc", path=db)
    assert v1["revision"] == 1 and v1["parents"] == []
    v2 = ok_json("put", "user/1", '{"name": "Ada L."}', "-j", path=db)
    assert v2["parents"] == [v1["version"]]

    got = ok_json("get", "user/1", path=db)
    assert got["value"] == {"name": "Ada L."} and got["version"] == v2["version"]
    raw = tide("get", "user/1", path=db)
    assert raw.returncode == 0 and json.loads(raw.stdout) == {"name": "Ada L."}
    old = tide("get", "user/1", "--version", v1["version"], path=db)
    assert json.loads(old.stdout) == {"name": "Ada"}
    assert json.loads(tide("get", "user/1", "--as-of", "1", path=db).stdout) == {"name": "Ada"}

    hist = ok_json("history", "user/1", path=db)
    assert [v["version"] for v in hist["versions"]] == [v2["version"], v1["version"]]
    table = tide("history", "user/1", path=db)
    assert table.returncode == 0 and v2["version"][:12].encode() in table.stdout

    d = ok_json("diff", "user/1", v1["version"], v2["version"], path=db)
    assert d == {
        "format": "json-patch",
        "changes": [{"op": "replace", "path": "/name", "value": "Ada L."}],
    }

    rb = ok_json("rollback", "user/1", v1["version"], path=db)
    assert rb["parents"] == [v2["version"]]
    assert json.loads(tide("get", "user/1", path=db).stdout) == {"name": "Ada"}

    ok_json("put", "user/2", "plain text", path=db)
    listing = ok_json("ls", "user/", path=db)
    assert [i["key"] for i in listing["items"]] == ["user/1", "user/2"]
    assert tide("ls", path=db).returncode == 0

    assert ok_json("del", "user/2", path=db)["deleted"] is True
    r = tide("get", "user/2", path=db)
    assert r.returncode == 1
    assert r.stderr.decode().startswith("error: ") and b"Traceback" not in r.stderr


def test_value_from_stdin_and_file(tmp_path: Path) -> None:
    db = tmp_path / "db"
    assert tide("put", "bin", "-", path=db, stdin=b"\x00\x01\x02").returncode == 0
    assert tide("get", "bin", path=db).stdout == b"\x00\x01\x02"
    f = tmp_path / "doc.json"
    f.write_text('{"a": 1}')
    assert tide("put", "doc", "--file", str(f), "-j", path=db).returncode == 0
    assert ok_json("get", "doc", path=db)["value"] == {"a": 1}


@pytest.mark.parametrize(
    "args",
    [
        ["put", "k", "{oops", "--json-doc"],  # invalid JSON document
        ["put", "", "v"],  # empty key
        ["put", "k" * 1025, "v"],  # key too large
        ["put", "k"],  # no value
        ["get", "k", "--version", "not-a-version"],
        ["get", "k", "--as-of", "last tuesday"],
        ["put", "k", "v", "--if-match", "xyz"],
        ["put", "k", "--file", "/no/such/file"],
        ["frobnicate"],  # unknown command
        ["put", "k", "v", "--no-such-flag"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    args: list[str], tmp_path: Path
) -> None:
    db = tmp_path / "db"
    r = tide(*args, path=db)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.decode().strip()
    assert "Traceback" not in err and err.startswith("error:")
    assert len(err.splitlines()) == 1, err
    if db.exists():
        listing = tide("ls", "--json", path=db)
        assert json.loads(listing.stdout)["items"] == []


def test_not_found_and_precondition_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "db"
    assert tide("get", "missing", path=db).returncode == 1
    assert tide("del", "missing", path=db).returncode == 1
    assert tide("history", "missing", path=db).returncode == 1
    v = ok_json("put", "k", "v1", path=db)["version"]
    ok_json("put", "k", "v2", path=db)
    r = tide("put", "k", "v3", "--if-match", v, path=db)
    assert r.returncode == 1 and b"not the sole current head" in r.stderr
    assert tide("put", "k", "v3", "--if-absent", path=db).returncode == 1
    assert tide("get", "k", "--version", "a" * 40, path=db).returncode == 1
    assert tide("get", "k", path=db).stdout == b"v2"
