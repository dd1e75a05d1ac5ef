"""Key -> shard: a stable hash of the key, or of its hash tag (Redis Cluster's rule).

The hash is fixed by this module and identical on every machine and every Python run
(it is *not* Python's ``hash()``, which is salted per process)::

    shard_of(key, shards) = int.from_bytes(blake2b(hashed_part(key), digest_size=8), "big")
                            % shards

``blake2b`` is BLAKE2b (RFC 7693) with an 8-byte digest and no key, salt or
personalisation, read as a big-endian unsigned 64-bit integer; ``key`` is encoded as
UTF-8 first. With 64 shards the modulo bias is below 2**-57.

``hashed_part`` follows Redis Cluster's hash-tag rule exactly (``keyHashSlot`` in
Redis's ``cluster.c``), on the UTF-8 bytes of the key:

* find the first ``{``; if there is none, hash the whole key;
* find the first ``}`` *after* it; if there is none, hash the whole key;
* if nothing lies between them (``{}``), hash the whole key;
* otherwise hash only the bytes between them.

So ``{user42}:contacts:7`` and ``{user42}:profile`` hash ``user42`` and share a shard;
``{}x`` hashes ``{}x``; ``{{a}}`` hashes ``{a``; ``a{b}{c}`` hashes ``b``; ``a{b`` hashes
``a{b``. (Redis maps the part to one of 16,384 slots with CRC16; tidekv maps it straight
to one of its shards with the 64-bit hash above: which keys share a shard is the same
rule, the numbers are not Redis's.)
"""

from __future__ import annotations

import hashlib

__all__ = [
    "DEFAULT_SHARDS",
    "MAX_SHARDS",
    "check_shards",
    "hash_tag",
    "hashed_part",
    "key_hash",
    "shard_of",
]

DEFAULT_SHARDS = 64
"""Shards per cluster unless the cluster is created with another number."""

MAX_SHARDS = 4096
"""The most shards a cluster may be created with."""


def _utf8(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def hash_tag(key: str | bytes) -> bytes | None:
    """The key's hash tag (the bytes between the braces), or None when it has none."""
    b = _utf8(key)
    start = b.find(b"{")
    if start < 0:
        return None
    end = b.find(b"}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return b[start + 1 : end]


def hashed_part(key: str | bytes) -> bytes:
    """The bytes that decide the key's shard: its hash tag, else the whole key."""
    tag = hash_tag(key)
    return _utf8(key) if tag is None else tag


def key_hash(key: str | bytes) -> int:
    """The 64-bit hash of the key's hashed part (see the module docstring)."""
    digest = hashlib.blake2b(hashed_part(key), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def check_shards(shards: int) -> int:
    """``shards`` if it is a valid shard count, else ``ValueError`` naming the problem."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"the number of shards must be an integer in 1..{MAX_SHARDS}: {shards!r}")
    return shards


def shard_of(key: str | bytes, shards: int = DEFAULT_SHARDS) -> int:
    """The shard (``0 .. shards-1``) that holds ``key``."""
    return key_hash(key) % check_shards(shards)
