"""Versions, their content-derived ids, encoding, and JSON validation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidekv.errors import InvalidInput, InvalidJSON, InvalidVersionId
from tidekv.versioning import (
    BYTES_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    ZERO,
    HLCTimestamp,
    Version,
    canonical_version_bytes,
    check_version_id,
    compute_version_id,
    id_tail,
    is_version_id,
    make_version,
    trusted_id_bytes,
    trusted_version_id,
    validate_json,
    value_digest,
)
from tidekv.versioning import version as version_module

from .strategies import json_docs, texts, timestamps, values, version_ids

T = HLCTimestamp
ADA = b'{"name":"Ada"}'


def ada() -> Version:
    return make_version(
        "user/1",
        [],
        ADA,
        T(1763788800000, 3),
        "site-a",
        author="ada",
        content_type=JSON_CONTENT_TYPE,
    )


# -- golden vectors: the id must be the same on every machine and in every run ----------


def test_golden_ids() -> None:
    v = ada()
    assert v.id == "50e10758203614580bd733585b1a3b75cc3f1e57"
    w = make_version("user/1", [v.id], None, T(1763788800001, 0), "site-b")
    assert w.id == "5f0975e483f61ac7d08c96102eba657ee27f8ad9"
    empty = compute_version_id("", [], "", ZERO, "", deleted=False, content_type="", author="")
    assert empty == "80ae491fe8c12ff12d385d2418541dcfee1058ae"


def test_id_matches_the_documented_layout() -> None:
    """Rebuild the canonical bytes from the documented layout, independently."""

    def field(s: str) -> bytes:
        b = s.encode()
        return struct.pack(">I", len(b)) + b

    parents = ["b" * 40, "a" * 40]
    data = (
        b"tidekv.version-id\x00"
        + b"\x01"
        + field("k\u00e9y")
        + struct.pack(">I", 2)
        + field("a" * 40)
        + field("b" * 40)
        + field("d" * 64)
        + struct.pack(">QH", 1234, 5)
        + field("site")
        + b"\x01"
        + field("text/plain")
        + field("me")
    )
    args: dict[str, Any] = dict(deleted=True, content_type="text/plain", author="me")
    assert (
        canonical_version_bytes("k\u00e9y", parents, "d" * 64, T(1234, 5), "site", **args) == data
    )
    got = compute_version_id("k\u00e9y", parents, "d" * 64, T(1234, 5), "site", **args)
    assert got == hashlib.sha256(data).hexdigest()[:40]


def test_value_digest() -> None:
    assert value_digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# -- properties of the id -------------------------------------------------------------

inputs = st.fixed_dictionaries(
    {
        "key": texts,
        "parents": st.lists(texts, max_size=3),
        "digest": texts,
        "hlc": timestamps,
        "origin": texts,
        "deleted": st.booleans(),
        "content_type": texts,
        "author": texts,
    }
)


def vid(d: dict[str, Any]) -> str:
    return compute_version_id(
        d["key"],
        d["parents"],
        d["digest"],
        d["hlc"],
        d["origin"],
        deleted=d["deleted"],
        content_type=d["content_type"],
        author=d["author"],
    )


def canon(d: dict[str, Any]) -> bytes:
    return canonical_version_bytes(
        d["key"],
        d["parents"],
        d["digest"],
        d["hlc"],
        d["origin"],
        deleted=d["deleted"],
        content_type=d["content_type"],
        author=d["author"],
    )


def normal(d: dict[str, Any]) -> tuple[object, ...]:
    """The inputs as the id sees them: parents as a set."""
    return tuple((k, tuple(sorted(set(v))) if k == "parents" else v) for k, v in sorted(d.items()))


@given(inputs)
def test_id_is_deterministic_and_well_formed(d: dict[str, Any]) -> None:
    a = vid(d)
    assert a == vid(dict(d))
    assert is_version_id(a)


@given(inputs, st.randoms(use_true_random=False))
def test_parent_order_and_duplicates_do_not_matter(d: dict[str, Any], rnd: Any) -> None:
    shuffled = d["parents"] * 2
    rnd.shuffle(shuffled)
    assert vid(d) == vid({**d, "parents": shuffled})


@given(
    inputs,
    inputs,
    st.sampled_from(
        sorted(["key", "parents", "digest", "hlc", "origin", "deleted", "content_type", "author"])
    ),
)
def test_id_changes_when_any_field_changes(
    d: dict[str, Any], other: dict[str, Any], name: str
) -> None:
    changed = {**d, name: other[name]}
    if normal(changed) == normal(d):
        return
    assert canon(changed) != canon(d)
    assert vid(changed) != vid(d)


@settings(max_examples=150)
@given(st.lists(inputs, min_size=2, max_size=40, unique_by=normal))
def test_no_collisions_between_distinct_inputs(ds: list[dict[str, Any]]) -> None:
    assert len({canon(d) for d in ds}) == len(ds)  # the encoding is injective...
    assert len({vid(d) for d in ds}) == len(ds)  # ...and so are the ids


def test_tricky_field_boundaries_do_not_collide() -> None:
    base: dict[str, Any] = dict(
        key="",
        parents=[],
        digest="",
        hlc=ZERO,
        origin="",
        deleted=False,
        content_type="",
        author="",
    )
    variants: list[dict[str, Any]] = [
        {"key": "a", "parents": ["b"]},
        {"key": "ab"},
        {"key": "ab", "parents": [""]},
        {"key": "a", "parents": ["", "b"]},
        {"parents": ["ab"]},
        {"parents": ["a", "b"]},
        {"key": "x"},
        {"origin": "x"},
        {"author": "x"},
        {"content_type": "x"},
        {"digest": "x"},
        {"origin": "x", "author": "x"},
        {"content_type": "x", "author": "y"},
        {"content_type": "xy"},
        {"content_type": "y", "author": "x"},
        {"deleted": True},
        {"key": "\x00"},
        {"key": "\x00\x00\x00\x01a"},
        {"hlc": T(0, 1)},
        {"hlc": T(1, 0)},
        {},
    ]
    ids = [vid({**base, **v}) for v in variants]
    assert len(set(ids)) == len(ids)


def test_unencodable_text_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        make_version("bad\ud800", [], b"x", ZERO, "o")


# -- make_version and the Version record --------------------------------------------------


@given(texts, st.lists(version_ids, max_size=4), values, timestamps, texts, texts, texts)
def test_make_version_and_round_trip(
    key: str,
    parents: list[str],
    value: bytes | None,
    hlc: HLCTimestamp,
    origin: str,
    author: str,
    ctype: str,
) -> None:
    v = make_version(key, parents, value, hlc, origin, author=author, content_type=ctype)
    assert v.parents == tuple(sorted(set(parents)))
    assert v.deleted == (value is None)
    assert v.size == (0 if value is None else len(value))
    assert v.digest == ("" if value is None else hashlib.sha256(value).hexdigest())
    assert v.recompute_id() == v.id
    assert Version.decode(v.encode()) == v
    assert json.loads(json.dumps(v.to_dict())) == v.to_dict()


def test_make_version_defaults_and_inputs() -> None:
    v = make_version("k", [], bytearray(b"ab"), ZERO, "o")  # type: ignore[arg-type]
    assert v.content_type == BYTES_CONTENT_TYPE and v.author == "" and v.size == 2
    assert make_version("k", [], memoryview(b"ab"), ZERO, "o") == v  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        make_version("k", "a" * 40, b"", ZERO, "o")  # one string is not a list of parents
    with pytest.raises(InvalidVersionId):
        make_version("k", ["nope"], b"", ZERO, "o")
    with pytest.raises(InvalidInput):
        make_version("k", [], "text", ZERO, "o")  # type: ignore[arg-type]


def test_to_dict() -> None:
    v = ada()
    assert v.to_dict() == {
        "version": v.id,
        "key": "user/1",
        "parents": [],
        "hlc": "1763788800000.3",
        "time": "2025-11-22T05:20:00.000Z",
        "origin": "site-a",
        "author": "ada",
        "deleted": False,
        "size": len(ADA),
        "content_type": JSON_CONTENT_TYPE,
        "digest": value_digest(ADA),
    }


def test_version_checks_its_shape() -> None:
    v = ada()
    p1, p2 = "1" * 40, "2" * 40
    bad: list[dict[str, Any]] = [
        {"id": "X" * 40},
        {"parents": (p2, p1)},
        {"parents": (p1, p1)},
        {"parents": [p1]},
        {"parents": ("short",)},
        {"parents": (v.id,)},
        {"size": -1},
        {"deleted": True},  # a tombstone with a digest
        {"digest": "abc"},
        {"deleted": 1},
        {"hlc": (0, 0)},
        {"key": b"k"},
    ]
    for change in bad:
        with pytest.raises(InvalidInput):
            dataclasses.replace(v, **change)
    dataclasses.replace(v, parents=(p1, p2))  # fine


def test_decode_rejects_garbage() -> None:
    good = ada().encode()
    for data in [b"", b"\x00", b"\x91\x01", good[:-1], good + b"\x00", b"\xc1" * 5]:
        with pytest.raises(InvalidInput):
            Version.decode(data)
    with pytest.raises(InvalidInput, match="format"):
        Version.decode(b"\x9c\x02" + good[2:])  # format 2


def test_encoding_is_compact() -> None:
    assert len(ada().encode()) < 120


# -- version id syntax ---------------------------------------------------------------------


def test_check_version_id_messages() -> None:
    ok = "0123456789abcdef0123456789abcdef01234567"
    assert check_version_id(ok) == ok and is_version_id(ok)
    cases = [
        ("abc", "has 3 characters"),
        ("", "has 0 characters"),
        (ok.upper(), "uppercase character 'A' at position 10"),
        (ok[:-1] + "g", "non-hex character 'g' at position 39"),
        (ok[:-1] + "\u0661", "non-hex"),
        ("x" * 500, "has 500 characters"),
    ]
    for text, msg in cases:
        assert not is_version_id(text)
        with pytest.raises(InvalidVersionId, match=msg) as info:
            check_version_id(text)
        assert len(info.value.message) < 200
    with pytest.raises(InvalidVersionId, match="string"):
        check_version_id(None)  # type: ignore[arg-type]
    assert not is_version_id(None)  # type: ignore[arg-type]


# -- JSON validation ------------------------------------------------------------------------


@given(json_docs)
def test_validate_json_accepts_json(doc: object) -> None:
    assert validate_json(json.dumps(doc).encode()) == json.loads(json.dumps(doc))


@pytest.mark.parametrize(
    "data", [b"", b"{", b'{"a":1,}', b"NaN", b"[1] 2", b"\xff", b"{'a':1}", b"tru"]
)
def test_validate_json_rejects_with_position(data: bytes) -> None:
    with pytest.raises(InvalidJSON) as info:
        validate_json(data)
    assert info.value.code == "invalid_json"
    assert "invalid JSON" in info.value.message


def test_validate_json_error_names_the_byte() -> None:
    with pytest.raises(InvalidJSON, match=r"byte 7"):
        validate_json(b'{"a":1,}')


# -- the store's fast path computes the same id -----------------------------------------


@settings(max_examples=300)
@given(
    key=texts,
    parents=st.lists(version_ids, max_size=4),
    value=st.none() | st.binary(max_size=64),
    hlc=timestamps,
    origin=texts,
    content_type=texts,
    author=texts,
)
def test_trusted_version_id_equals_compute_version_id(
    key: str,
    parents: list[str],
    value: bytes | None,
    hlc: HLCTimestamp,
    origin: str,
    content_type: str,
    author: str,
) -> None:
    unique = tuple(sorted(set(parents)))
    deleted = value is None
    digest = b"" if value is None else hashlib.sha256(value).digest()
    want = compute_version_id(
        key,
        unique,
        digest.hex(),
        hlc,
        origin,
        deleted=deleted,
        content_type=content_type,
        author=author,
    )
    for _ in range(2):  # the second call hits the memoised tail
        got = trusted_version_id(
            key, unique, digest, hlc.wall, hlc.logical, origin, deleted, content_type, author
        )
        assert got == want
    made = make_version(key, unique, value, hlc, origin, author=author, content_type=content_type)
    assert made.id == want


@settings(max_examples=300)
@given(
    key=texts,
    parents=st.lists(version_ids, max_size=4),
    value=st.none() | st.binary(max_size=300),
    hlc=timestamps,
    origin=texts,
    content_type=texts,
    author=texts,
)
def test_trusted_id_bytes_equals_compute_version_id(
    key: str,
    parents: list[str],
    value: bytes | None,
    hlc: HLCTimestamp,
    origin: str,
    content_type: str,
    author: str,
) -> None:
    """The raw id of the write path, in Python and (when built) in C, is the id."""
    unique = tuple(sorted(set(parents)))
    deleted = value is None
    want = compute_version_id(
        key,
        unique,
        "" if value is None else hashlib.sha256(value).hexdigest(),
        hlc,
        origin,
        deleted=deleted,
        content_type=content_type,
        author=author,
    )
    tail = id_tail(origin, deleted, content_type, author)
    args = (key.encode(), unique, value, hlc.wall, hlc.logical, tail)
    assert version_module._py_id_bytes(*args).hex()[:40] == want
    assert trusted_id_bytes(*args).hex() == want


def _idhash() -> Any:
    """The C extension; missing only where nothing could compile it."""
    try:
        from tidekv.versioning import _idhash
    except ImportError:
        import shutil
        import sysconfig

        headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
        if shutil.which("cc") and headers:
            raise AssertionError("a C compiler is here but the extension was not built") from None
        pytest.skip("no C compiler: the pure Python version id is used")
    return _idhash


def test_the_c_id_is_the_one_in_use() -> None:
    ext = _idhash()
    assert trusted_id_bytes is ext.id_bytes


@pytest.mark.parametrize("portable", [False, True])
def test_the_c_sha256_equals_hashlib(portable: bool) -> None:
    """Every length across the block and padding boundaries, both compressors (the
    x86 SHA extensions where the CPU has them, and plain C)."""
    ext = _idhash()
    data = bytes((i * 131 + 7) % 256 for i in range(1100))
    for n in [*range(0, 260), 511, 512, 513, 1000, 1100]:
        assert ext.sha256(data[:n], portable) == hashlib.sha256(data[:n]).digest(), n


def test_the_c_id_refuses_what_python_would_not_hash() -> None:
    ext = _idhash()
    tail = id_tail("o", False, "t", "")
    with pytest.raises(ValueError):
        ext.id_bytes(b"k", ("not an id",), b"v", 1, 2, tail)
    with pytest.raises(TypeError):
        ext.id_bytes("k", (), b"v", 1, 2, tail)
    with pytest.raises(OverflowError):
        ext.id_bytes(b"k", (), b"v", 1, 1 << 16, tail)
