"""Diffs between two values."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.versioning import (
    BYTES_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    Diff,
    diff_values,
    is_json_type,
    is_text_type,
    validate_json,
    value_digest,
)

from .strategies import json_docs, texts

J, TXT, B = JSON_CONTENT_TYPE, "text/plain; charset=utf-8", BYTES_CONTENT_TYPE


def strict(a: Any, b: Any) -> bool:
    """Type-strict JSON equality (1, 1.0 and true differ)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and type(a) is type(b)


def enc(doc: object) -> bytes:
    return json.dumps(doc).encode()


def apply_hunks(old: str, hunks: Any) -> str:
    """Apply text hunks the way `patch` would, checking every context and removed line."""
    lines = old.split("\n")
    src = [x + "\n" for x in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    out: list[str] = []
    pos = 0
    for h in hunks:
        start = h["old_start"] - 1 if h["old_lines"] else h["old_start"]
        assert start >= pos
        out.extend(src[pos:start])
        pos = start
        for item in h["lines"]:
            if item["op"] in " -":
                assert src[pos] == item["line"]
                pos += 1
            if item["op"] in " +":
                out.append(item["line"])
        assert pos == start + h["old_lines"]
        new_count = sum(1 for i in h["lines"] if i["op"] in " +")
        assert new_count == h["new_lines"]
    out.extend(src[pos:])
    return "".join(out)


@settings(max_examples=300)
@given(json_docs, json_docs)
def test_json_patch_reproduces_the_new_document(a: object, b: object) -> None:
    d = diff_values(enc(a), J, enc(b), J)
    assert d.format == "json-patch"
    assert isinstance(d.changes, list)
    old, new = validate_json(enc(a)), validate_json(enc(b))
    assert strict(jsonpatch.apply_patch(old, d.changes), new)
    if strict(old, new):
        assert d.changes == []
    json.dumps(d.to_dict())


def test_json_patch_examples() -> None:
    d = diff_values(b'{"a":1,"b":[1,2]}', J, b'{"a":true,"b":[1,2,3]}', "application/vnd.x+json")
    assert d.to_dict() == {
        "format": "json-patch",
        "changes": [
            {"op": "replace", "path": "/a", "value": True},
            {"op": "add", "path": "/b/2", "value": 3},
        ],
    }
    # absent / tombstone counts as null
    assert diff_values(None, J, b"[1]", J).changes == [{"op": "replace", "path": "", "value": [1]}]
    assert diff_values(b"[1]", J, None, J).changes == [{"op": "replace", "path": "", "value": None}]
    assert diff_values(b"1", J, b"1.0", J).changes == [{"op": "replace", "path": "", "value": 1.0}]


@settings(max_examples=300)
@given(
    texts | st.text(alphabet="ab\n\r", max_size=40), texts | st.text(alphabet="ab\n\r", max_size=40)
)
def test_text_hunks_apply_to_the_old_text(a: str, b: str) -> None:
    d = diff_values(a.encode(), TXT, b.encode(), "text/markdown")
    assert d.format == "text"
    assert apply_hunks(a, d.changes) == b
    if a == b:
        assert d.changes == []
    json.dumps(d.to_dict())


def test_text_examples() -> None:
    d = diff_values(b"one\ntwo\nthree\n", TXT, b"one\n2\nthree\n", TXT)
    assert d.changes == [
        {
            "old_start": 1,
            "old_lines": 3,
            "new_start": 1,
            "new_lines": 3,
            "lines": [
                {"op": " ", "line": "one\n"},
                {"op": "-", "line": "two\n"},
                {"op": "+", "line": "2\n"},
                {"op": " ", "line": "three\n"},
            ],
        }
    ]
    created = diff_values(None, TXT, b"a\nb", TXT)
    assert created.changes == [
        {
            "old_start": 0,
            "old_lines": 0,
            "new_start": 1,
            "new_lines": 2,
            "lines": [{"op": "+", "line": "a\n"}, {"op": "+", "line": "b"}],
        }
    ]
    deleted = diff_values(b"a\n", TXT, None, TXT)
    assert deleted.format == "text"
    assert deleted.changes == [
        {
            "old_start": 1,
            "old_lines": 1,
            "new_start": 0,
            "new_lines": 0,
            "lines": [{"op": "-", "line": "a\n"}],
        }
    ]


def test_bytes_summary() -> None:
    d = diff_values(b"\x00\x01", B, b"hello", B)  # octet-stream is never sniffed as text
    assert d == Diff(
        "bytes",
        {
            "old": {"size": 2, "digest": value_digest(b"\x00\x01")},
            "new": {"size": 5, "digest": value_digest(b"hello")},
            "equal": False,
        },
    )
    assert diff_values(b"x", B, b"x", B).changes["equal"] is True  # type: ignore[index]
    assert diff_values(None, B, b"x", B).changes == {
        "old": None,
        "new": {"size": 1, "digest": value_digest(b"x")},
        "equal": False,
    }
    assert diff_values(None, J, None, TXT).changes == {"old": None, "new": None, "equal": True}


@pytest.mark.parametrize(
    "old,oct,new,nct,fmt",
    [
        (b"{}", J, b"{}", B, "bytes"),  # mixed JSON and bytes
        (b"{}", J, b"hi", TXT, "text"),  # JSON and text: a line diff
        (b"{oops", J, b"{}", J, "text"),  # JSON that does not parse: a line diff
        (b"\xff", TXT, b"a", TXT, "bytes"),  # text that is not UTF-8
        (b"\xff", J, b"{}", J, "bytes"),
        (b"a", "image/png", b"b", "image/png", "bytes"),
        (b"[]", "application/json; charset=utf-8", b"[1]", "APPLICATION/JSON", "json-patch"),
    ],
)
def test_format_choice(old: bytes, oct: str, new: bytes, nct: str, fmt: str) -> None:
    assert diff_values(old, oct, new, nct).format == fmt


def test_content_type_predicates() -> None:
    assert is_json_type("application/json")
    assert is_json_type("Application/JSON ; charset=utf-8")
    assert is_json_type("application/ld+json")
    assert not is_json_type("+json")
    assert not is_json_type("application/jsonx")
    assert is_text_type("text/csv")
    assert not is_text_type(B)
