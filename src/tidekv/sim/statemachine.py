"""The replicated state machine of the simulator: a key-value register with sessions.

A command is ``(client, seq, kind, key, a, b)``: ``write(key, a)`` or
``cas(key, expected=a, new=b)``. Each client has at most one operation outstanding and
retries it with the same ``seq``, so the session table (client -> last seq and its
result, Raft thesis §6.3) makes a retried command apply exactly once: a duplicate
returns the recorded result and changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Command", "KVStateMachine", "decode_command", "encode_command"]


class Command(msgspec.Struct, frozen=True, array_like=True):
    client: int
    seq: int
    kind: str  # "write" | "cas"
    key: str
    a: int | None = None
    b: int | None = None


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Command)


def encode_command(c: Command) -> bytes:
    return _enc.encode(c)


def decode_command(b: bytes) -> Command:
    return _dec.decode(b)


class _Image(msgspec.Struct, array_like=True):
    data: dict[str, int]
    sessions: dict[int, tuple[int, Any]]


_img_enc = msgspec.msgpack.Encoder()
_img_dec = msgspec.msgpack.Decoder(_Image)


class KVStateMachine:
    """Registers (initially ``None``) plus the per-client session table."""

    __slots__ = ("data", "sessions")

    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.sessions: dict[int, tuple[int, Any]] = {}

    def apply(self, c: Command) -> tuple[bool, Any]:
        """Apply ``c``; returns ``(fresh, result)``; ``fresh`` is False for a duplicate."""
        last = self.sessions.get(c.client)
        if last is not None and c.seq <= last[0]:
            return False, last[1] if c.seq == last[0] else None
        result: Any
        if c.kind == "write":
            assert c.a is not None
            self.data[c.key] = c.a
            result = None
        elif c.kind == "cas":
            cur = self.data.get(c.key)
            result = cur == c.a
            if result:
                assert c.b is not None
                self.data[c.key] = c.b
        else:
            raise ValueError(f"unknown command kind {c.kind!r}")
        self.sessions[c.client] = (c.seq, result)
        return True, result

    def read(self, key: str) -> int | None:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return _img_enc.encode(_Image(dict(self.data), dict(self.sessions)))

    @classmethod
    def restore(cls, blob: bytes) -> KVStateMachine:
        sm = cls()
        if blob:
            img = _img_dec.decode(blob)
            sm.data = dict(img.data)
            sm.sessions = {k: (v[0], v[1]) for k, v in img.sessions.items()}
        return sm

    def digest(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.data.items()))
