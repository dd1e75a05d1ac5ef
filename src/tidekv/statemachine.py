"""The versioned state machine: applies one write command to a storage engine as ONE batch.

This is plain code (no threads, no clocks, no I/O of its own beyond the engine it is
given), so the embedded store calls it directly and a Raft replica can later apply
committed entries through it unchanged: a :class:`WriteCommand` carries everything that
must be identical on every replica (the HLC time and origin are chosen by the proposer),
and :meth:`StateMachine.apply` is deterministic given the engine's contents.

Layout in the engine (every key starts with a one-byte tag)::

    K<key utf-8>            -> KeyRecord: current heads, the resolved version, its value inline
    V<version id>           -> revision (8 bytes big-endian) + Version.encode()
    D<version id>           -> the version's value bytes (absent for tombstones)
    C<revision 8 bytes BE>  -> ChangeRecord: version id, key, clock after the change
    M<name>                 -> store metadata (origin, format, the Raft applied index)
    I<idempotency key>      -> the outcome of the first request with that key (replicated)

A change writes K, V, D (unless a tombstone) and C in one atomic write batch, so a
crash never leaves a version without its key record or change-log entry, or the reverse.
The revision is the position in the change log; the newest ``C`` entry also holds the
store's HLC, so both survive a restart without an extra write.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from tidekv import errors
from tidekv.errors import (
    CorruptionError,
    KeyNotFound,
    PreconditionFailed,
    TideError,
    VersionNotFound,
)
from tidekv.storage import Engine, Op, prefix_end
from tidekv.versioning import (
    HLCTimestamp,
    Resolver,
    Version,
    add_head,
    get_resolver,
    make_version,
    order_key,
)

K, V, D, C, M = b"K", b"V", b"D", b"C", b"M"
IDEM = b"I"
_REV = struct.Struct(">Q")

FORMAT_VERSION = 1


class KeyRecord(msgspec.Struct, array_like=True, frozen=True):
    """What ``K<key>`` holds: the current heads and the resolved state served by reads."""

    heads: tuple[str, ...]
    version: str  # the head whose content is served (resolved winner)
    revision: int  # revision at which ``version`` was applied
    content_type: str
    deleted: bool
    value: bytes | None
    hlc_wall: int
    hlc_logical: int


class ChangeRecord(msgspec.Struct, array_like=True, frozen=True):
    """What ``C<revision>`` holds."""

    version: str
    key: str
    deleted: bool
    clock_wall: int  # the store's HLC after this change (restored on open)
    clock_logical: int


_key_enc = msgspec.msgpack.Encoder()
_key_dec = msgspec.msgpack.Decoder(KeyRecord)
_chg_dec = msgspec.msgpack.Decoder(ChangeRecord)


def key_key(key: str) -> bytes:
    return K + key.encode()


def version_key(version_id: str) -> bytes:
    return V + version_id.encode()


def value_key(version_id: str) -> bytes:
    return D + version_id.encode()


def change_key(revision: int) -> bytes:
    return C + _REV.pack(revision)


def meta_key(name: str) -> bytes:
    return M + name.encode()


def idem_key(idempotency_key: str) -> bytes:
    return IDEM + idempotency_key.encode()


APPLIED_KEY = meta_key("applied")


@dataclass(frozen=True, slots=True)
class WriteCommand:
    """One change, complete enough to be applied identically on every replica.

    ``value is None`` writes a tombstone. ``parents is None`` means "the key's current
    heads at apply time" (a local write that supersedes every sibling); an explicit
    tuple is used by replication and by manual sibling resolution.
    """

    key: str
    value: bytes | None
    content_type: str
    hlc: HLCTimestamp
    origin: str
    author: str = ""
    if_match: str | None = None
    if_none_match: bool = False
    parents: tuple[str, ...] | None = None
    require_exists: bool = False  # deletes: 404 when there is nothing to delete
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of an applied change (the PUT/DELETE response of the API)."""

    key: str
    version: str
    parents: tuple[str, ...]
    revision: int
    hlc: HLCTimestamp
    deleted: bool
    heads: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "version": self.version,
            "parents": list(self.parents),
            "revision": self.revision,
            "hlc": str(self.hlc),
            "deleted": self.deleted,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed."""

    revision: int
    key: str
    version: str
    deleted: bool

    @property
    def type(self) -> str:
        return "delete" if self.deleted else "put"


class _Outcome(msgspec.Struct, array_like=True, frozen=True):
    """What ``I<idempotency key>`` holds: a result, or the error the request got."""

    key: str
    version: str = ""
    parents: tuple[str, ...] = ()
    revision: int = 0
    hlc_wall: int = 0
    hlc_logical: int = 0
    deleted: bool = False
    heads: tuple[str, ...] = ()
    error: str = ""  # the error class name; empty for a result
    message: str = ""
    details: dict[str, Any] = {}


_outcome_dec = msgspec.msgpack.Decoder(_Outcome)


def _encode_outcome(outcome: WriteResult | TideError) -> bytes:
    if isinstance(outcome, WriteResult):
        return _key_enc.encode(
            _Outcome(
                outcome.key,
                outcome.version,
                outcome.parents,
                outcome.revision,
                outcome.hlc.wall,
                outcome.hlc.logical,
                outcome.deleted,
                outcome.heads,
            )
        )
    return _key_enc.encode(
        _Outcome(
            str(outcome.details.get("key", "")),
            error=type(outcome).__name__,
            message=outcome.message,
            details=outcome.details,
        )
    )


def _decode_outcome(raw: bytes) -> WriteResult | TideError:
    o = _outcome_dec.decode(raw)
    if o.error:
        cls = getattr(errors, o.error, None)
        if not (isinstance(cls, type) and issubclass(cls, TideError)):
            cls = TideError
        return cls(o.message, **o.details)
    return WriteResult(
        key=o.key,
        version=o.version,
        parents=o.parents,
        revision=o.revision,
        hlc=HLCTimestamp(o.hlc_wall, o.hlc_logical),
        deleted=o.deleted,
        heads=o.heads,
    )


def decode_key_record(raw: bytes) -> KeyRecord:
    try:
        return _key_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"unreadable key record: {exc}") from exc


def encode_version_record(revision: int, version: Version) -> bytes:
    return _REV.pack(revision) + version.encode()


def decode_version_record(raw: bytes) -> tuple[int, Version]:
    try:
        return _REV.unpack_from(raw)[0], Version.decode(raw[8:])
    except Exception as exc:
        raise CorruptionError(f"unreadable version record: {exc}") from exc


class StateMachine:
    """Applies :class:`WriteCommand` s to an engine; reads the versioned state back."""

    def __init__(self, engine: Engine, *, resolver: str | Resolver = "lww", sync: bool = True):
        self.engine = engine
        self.resolver: Resolver = get_resolver(resolver) if isinstance(resolver, str) else resolver
        self.sync = sync
        self.revision, self.clock = self._recover_position()
        raw = engine.get(APPLIED_KEY)
        self.applied = 0 if raw is None else _REV.unpack(raw)[0]
        """The last Raft entry applied (0 for an embedded store)."""

    # -- recovery ---------------------------------------------------------------

    def _recover_position(self) -> tuple[int, HLCTimestamp]:
        last = next(self.engine.scan_prefix(C, reverse=True, limit=1), None)
        if last is None:
            return 0, HLCTimestamp(0, 0)
        rev = _REV.unpack_from(last[0], 1)[0]
        rec = _chg_dec.decode(last[1])
        return rev, HLCTimestamp(rec.clock_wall, rec.clock_logical)

    # -- reads ------------------------------------------------------------------

    def key_record(self, key: str) -> KeyRecord | None:
        raw = self.engine.get(key_key(key))
        return None if raw is None else decode_key_record(raw)

    def version_record(self, version_id: str) -> tuple[int, Version] | None:
        raw = self.engine.get(version_key(version_id))
        return None if raw is None else decode_version_record(raw)

    def lookup(self, version_id: str) -> Version | None:
        rec = self.version_record(version_id)
        return None if rec is None else rec[1]

    def value_of(self, version: Version) -> bytes | None:
        if version.deleted:
            return None
        raw = self.engine.get(value_key(version.id))
        if raw is None:
            raise CorruptionError(f"value of version {version.id} is missing")
        return raw

    def changes(self, since: int = 0, limit: int | None = None) -> Iterator[Change]:
        for k, raw in self.engine.scan(change_key(since + 1), prefix_end(C), limit=limit):
            rec = _chg_dec.decode(raw)
            yield Change(_REV.unpack_from(k, 1)[0], rec.key, rec.version, rec.deleted)

    def scan_keys(
        self, start: bytes, end: bytes | None, limit: int | None = None
    ) -> Iterator[tuple[str, KeyRecord]]:
        for k, raw in self.engine.scan(K + start, end, limit=limit):
            yield k[1:].decode(), decode_key_record(raw)

    # -- the one write path -----------------------------------------------------

    def apply(self, cmd: WriteCommand) -> WriteResult:
        """Apply one change as one atomic engine batch; raise before writing anything
        when a precondition fails."""
        ops, result, clock = self._plan(cmd)
        self.engine.write_batch(ops, sync=self.sync)
        self.revision, self.clock = result.revision, clock
        return result

    def apply_entry(self, cmd: WriteCommand, index: int) -> WriteResult | TideError:
        """The replicated write path: apply the command of the Raft entry at ``index``.

        Deterministic on every replica: the outcome (a result, or the error a failed
        precondition gives) is returned, not raised, and ONE batch writes the change,
        the applied index and, with an idempotency key, the outcome under that key, so
        a retried request returns the first outcome and creates no second version. An
        entry at or below the applied index (replayed after a restart) changes nothing.
        """
        if index <= self.applied:
            raise CorruptionError(f"entry {index} applied twice (applied {self.applied})")
        idem = cmd.idempotency_key
        if idem is not None:
            prior = self.idempotent_outcome(idem)
            if prior is not None:
                self.engine.write_batch([(APPLIED_KEY, _REV.pack(index))], sync=False)
                self.applied = index
                return prior
        outcome: WriteResult | TideError
        try:
            ops, outcome, clock = self._plan(cmd)
        except TideError as exc:
            ops, outcome, clock = [], exc, self.clock
        ops.append((APPLIED_KEY, _REV.pack(index)))
        if idem is not None:
            ops.append((idem_key(idem), _encode_outcome(outcome)))
        self.engine.write_batch(ops, sync=False)
        self.applied = index
        if isinstance(outcome, WriteResult):
            self.revision, self.clock = outcome.revision, clock
        return outcome

    def mark_applied(self, index: int, extra: Sequence[Op] = ()) -> None:
        """Record that Raft entry ``index`` (a no-op or membership entry) was applied,
        in one batch with ``extra`` (e.g. the node address book a membership entry
        changes)."""
        if index > self.applied:
            self.engine.write_batch([*extra, (APPLIED_KEY, _REV.pack(index))], sync=False)
            self.applied = index

    def idempotent_outcome(self, idempotency_key: str) -> WriteResult | TideError | None:
        raw = self.engine.get(idem_key(idempotency_key))
        return None if raw is None else _decode_outcome(raw)

    def _plan(self, cmd: WriteCommand) -> tuple[list[Op], WriteResult, HLCTimestamp]:
        """The engine ops of one change and its result; raises when a precondition fails."""
        current = self.key_record(cmd.key)
        heads: tuple[str, ...] = current.heads if current is not None else ()
        absent = current is None or (current.deleted and len(heads) <= 1)
        if cmd.if_none_match and not absent:
            raise PreconditionFailed(f"key {cmd.key!r} exists", key=cmd.key, heads=list(heads))
        if cmd.if_match is not None and heads != (cmd.if_match,):
            raise PreconditionFailed(
                f"version {cmd.if_match} is not the sole current head of {cmd.key!r}",
                key=cmd.key,
                heads=list(heads),
            )
        if cmd.require_exists and absent:
            raise KeyNotFound(f"key {cmd.key!r} not found", key=cmd.key)

        if cmd.parents is None:
            parents = heads
        else:
            parents = cmd.parents
            for p in parents:
                if self.version_record(p) is None:
                    raise VersionNotFound(f"parent version {p} not found", version=p)

        version = make_version(
            cmd.key,
            parents,
            cmd.value,
            cmd.hlc,
            cmd.origin,
            author=cmd.author,
            content_type=cmd.content_type,
        )
        revision = self.revision + 1
        clock = cmd.hlc if cmd.hlc > self.clock else self.clock
        new_heads = add_head(heads, version)

        if new_heads == (version.id,):
            served, served_rev, value = version, revision, cmd.value
        else:
            served, served_rev, value = self._resolve(new_heads, version, revision, cmd.value)

        record = KeyRecord(
            heads=new_heads,
            version=served.id,
            revision=served_rev,
            content_type=served.content_type,
            deleted=served.deleted,
            value=value,
            hlc_wall=served.hlc.wall,
            hlc_logical=served.hlc.logical,
        )
        ops: list[Op] = [
            (key_key(cmd.key), _key_enc.encode(record)),
            (version_key(version.id), encode_version_record(revision, version)),
            (
                change_key(revision),
                _key_enc.encode(
                    ChangeRecord(version.id, cmd.key, version.deleted, clock.wall, clock.logical)
                ),
            ),
        ]
        if cmd.value is not None:
            ops.append((value_key(version.id), cmd.value))
        return (
            ops,
            WriteResult(
                key=cmd.key,
                version=version.id,
                parents=version.parents,
                revision=revision,
                hlc=version.hlc,
                deleted=version.deleted,
                heads=new_heads,
            ),
            clock,
        )

    def _resolve(
        self, heads: tuple[str, ...], new: Version, new_rev: int, new_value: bytes | None
    ) -> tuple[Version, int, bytes | None]:
        """Resolve siblings; returns the served version, its revision and its value."""
        versions: list[Version] = []
        revs: dict[str, int] = {new.id: new_rev}
        for h in heads:
            if h == new.id:
                versions.append(new)
                continue
            rec = self.version_record(h)
            if rec is None:
                raise CorruptionError(f"head version {h} is missing")
            revs[h] = rec[0]
            versions.append(rec[1])

        def load(v: Version) -> bytes | None:
            return new_value if v.id == new.id else self.value_of(v)

        res = self.resolver.resolve(versions, load)
        if res.version is not None and not res.unresolved:
            return res.version, revs[res.version.id], res.value
        # Unresolved (manual policy) or merged content: the record still names one head
        # (last-write-wins) so ETags and as-of reads work; readers see `unresolved`.
        served = max(versions, key=order_key)
        return served, revs[served.id], load(served)


def verify(sm: StateMachine) -> dict[str, int]:
    """Check the cross-record invariants of the layout; raise CorruptionError on the
    first violation, else return counts. Used after crashes and by ``tide fsck``."""
    eng = sm.engine
    versions: dict[str, int] = {}
    for k, raw in eng.scan_prefix(V):
        rev, v = decode_version_record(raw)
        vid = k[1:].decode()
        if v.id != vid:
            raise CorruptionError(f"version record {vid} holds version {v.id}")
        versions[vid] = rev
        if not v.deleted and eng.get(value_key(vid)) is None:
            raise CorruptionError(f"value of version {vid} is missing")
    changes = 0
    for change in sm.changes(0):
        changes += 1
        if change.revision != changes:
            raise CorruptionError(f"change log jumps from {changes - 1} to {change.revision}")
        if versions.get(change.version) != change.revision:
            raise CorruptionError(
                f"change {change.revision} names version {change.version}, "
                "which is missing or was applied at another revision"
            )
    if changes != len(versions):
        raise CorruptionError(f"{len(versions)} versions but {changes} changes")
    if changes != sm.revision:
        raise CorruptionError(f"revision {sm.revision} but {changes} changes")
    keys = 0
    for k, raw in eng.scan_prefix(K):
        keys += 1
        rec = decode_key_record(raw)
        key = k[1:].decode()
        if rec.version not in rec.heads:
            raise CorruptionError(f"key {key!r} serves {rec.version}, which is not a head")
        for h in rec.heads:
            if h not in versions:
                raise CorruptionError(f"key {key!r} has a missing head {h}")
        served = sm.lookup(rec.version)
        assert served is not None
        if served.key != key or served.deleted != rec.deleted:
            raise CorruptionError(f"key {key!r} record disagrees with version {served.id}")
        if not rec.deleted and rec.value != sm.value_of(served):
            raise CorruptionError(f"key {key!r} inline value differs from its version")
    return {"keys": keys, "versions": len(versions), "revision": sm.revision}
