"""Key -> shard: the documented hash, Redis Cluster's hash-tag rule, stability."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidekv.sharding.keys import DEFAULT_SHARDS, hash_tag, hashed_part, key_hash, shard_of

# Redis Cluster specification, "Hash tags", and keyHashSlot() in cluster.c
REDIS_CASES = [
    ("{user1000}.following", b"user1000"),
    ("{user1000}.followers", b"user1000"),
    ("foo{}{bar}", b"foo{}{bar}"),  # the first { is followed by } at once: whole key
    ("foo{{bar}}zap", b"{bar"),  # from the first { to the first } after it
    ("foo{bar}{zap}", b"bar"),  # only the first tag counts
    ("{}", b"{}"),
    ("{}x", b"{}x"),
    ("{{a}}", b"{a"),
    ("a{b}{c}", b"b"),
    ("a{b", b"a{b"),  # no closing brace
    ("a}b{c", b"a}b{c"),  # a } before the first { does not close anything
    ("}{x}", b"x"),
    ("plain", b"plain"),
    ("{user42}:contacts:7", b"user42"),
    ("{é}x", "é".encode()),
]


@pytest.mark.parametrize(("key", "part"), REDIS_CASES)
def test_redis_hash_tag_rule(key: str, part: bytes) -> None:
    assert hashed_part(key) == part
    assert hash_tag(key) == (None if part == key.encode() else part)


def test_hash_tags_share_a_shard() -> None:
    assert shard_of("{user42}:contacts:7") == shard_of("{user42}:profile") == shard_of("user42")
    assert shard_of("{user42}:contacts:7", 7) == shard_of("{user42}:profile", 7)


def test_the_hash_is_the_documented_blake2b() -> None:
    want = int.from_bytes(hashlib.blake2b(b"user42", digest_size=8).digest(), "big")
    assert key_hash("{user42}:x") == want
    assert shard_of("{user42}:x", 64) == want % 64


def test_known_answers() -> None:
    # pinned: a change here moves every key of every existing cluster
    assert key_hash("") == 16476032584258269876
    assert key_hash("a") == 4681665781835383343
    assert (shard_of("user:1"), shard_of("{user42}:profile"), shard_of("héllo")) == (18, 20, 11)


def test_same_in_another_process_with_another_hash_seed() -> None:
    code = "from tidekv.sharding import key_hash; print(key_hash('user:1'), key_hash('x{y}'))"
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outs.add(r.stdout.strip())
    assert outs == {f"{key_hash('user:1')} {key_hash('y')}"}


def test_keys_spread_evenly_over_the_shards() -> None:
    counts = [0] * DEFAULT_SHARDS
    n = 64_000
    for i in range(n):
        counts[shard_of(f"key:{i}")] += 1
    # binomial(64000, 1/64): mean 1000, sd ~31; 6 sd either side
    assert min(counts) > 810 and max(counts) < 1190, (min(counts), max(counts))


@given(st.text(max_size=40), st.integers(1, 4096))
def test_shard_in_range_and_str_equals_bytes(key: str, shards: int) -> None:
    s = shard_of(key, shards)
    assert 0 <= s < shards
    assert s == shard_of(key.encode(), shards)


@given(st.text(min_size=1, max_size=10).filter(lambda t: "}" not in t), st.text(max_size=10))
def test_any_tag_groups_its_keys(tag: str, rest: str) -> None:
    assert shard_of("{" + tag + "}" + rest) == shard_of(tag)


@pytest.mark.parametrize("bad", [0, -1, 4097, True, 2.0])
def test_bad_shard_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="number of shards"):
        shard_of("k", bad)  # type: ignore[arg-type]
