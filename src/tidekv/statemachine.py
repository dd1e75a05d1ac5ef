"""The versioned state machine: applies one write command to a storage engine as ONE batch.

This is plain code (no threads, no clocks, no I/O of its own beyond the engine it is
given), so the embedded store calls it directly and a Raft replica can later apply
committed entries through it unchanged: a :class:`WriteCommand` carries everything that
must be identical on every replica (the HLC time and origin are chosen by the proposer),
and :meth:`StateMachine.apply` is deterministic given the engine's contents.

Layout in the engine (format 4): the key records have a keyspace of their own,
``keys`` (a RocksDB column family on ``lsm``: its own memtable, files and bloom filters,
so the get of a key record searches only key records); every other record is in the
default keyspace and starts with a one-byte tag::

    keys: <key utf-8>       -> KeyRecord: current heads, the served (resolved) version
                               with every field of it (parents, origin, author: the
                               rest is derived) and its value inline
    V<version id>           -> VersionRecord: a version K does not serve (a sibling
                               that lost, or one that was superseded), its revision
                               and its value
    C<revision 8 bytes BE>  -> change: 0x02, version id (20 bytes), tombstone flag, the
                               store's HLC after the change (10 bytes), the key (utf-8)
    M<name>                 -> store metadata (origin, ``M format`` = 4, the Raft
                               applied index)
    I<idempotency key>      -> the outcome of the first request with that key (replicated)

A version is stored once: whole in its key's K record while it is served, and in
``V<id>`` (with its value) from the change that stops K serving it (or at once when it
is written as a sibling that is not served). So a put of a new key writes two records
(K, C) and a put that replaces the served version three (V of the old one, K, C), in
ONE atomic write batch: a crash never leaves a version without its key record or
change-log entry, or the reverse. Every reader that names a version also names its key
and looks in K first, then in V: the batch that stops K serving a version writes its V
record, and an engine that applies a batch op by op (memory, hash) applies V records
first, then K, then C, so a reader without the write lock that saw a key record or a
change entry finds every version they name. The revision is the position in the change
log; the newest ``C`` entry also holds the store's HLC, so both survive a restart
without an extra write.

Older formats are read and written in their own layout (``self.format``): format 3
(``M format`` = 3) wrote a ``V`` record for every version, its value in K while served
and in ``D<version id>`` once superseded; formats 1 and 2 (no ``M format`` record, an
engine with data) did the same with the key records in the default keyspace as
``K<key>``. Format 1 (before 2026-12) kept every value in ``D``, encoded ``V`` as
revision + :meth:`Version.encode` and ``C`` as a msgpack array; both are still read (a
format-1 ``V`` record starts with a zero byte, later ones with a msgpack array header).
A new (empty) engine gets format 4. The readers below handle every format.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import msgspec

from tidekv import errors
from tidekv.errors import (
    CorruptionError,
    InvalidInput,
    KeyNotFound,
    PreconditionFailed,
    TideError,
    VersionNotFound,
)
from tidekv.storage import DEFAULT_KEYSPACE, Engine, Keyspace, KsOp, Op, prefix_end
from tidekv.versioning import (
    CONTENT_TYPE_CODES,
    RECORD_FORMAT,
    EncodedVersion,
    HLCTimestamp,
    Resolver,
    Version,
    check_version_id,
    get_resolver,
    id_tail,
    order_key,
    trusted_id_bytes,
    trusted_version_id,
)

K, V, D, C, M = b"K", b"V", b"D", b"C", b"M"
IDEM = b"I"
_REV = struct.Struct(">Q")
_CKEY = struct.Struct(">cQ")  # C + revision: a change key in one pack

FORMAT_VERSION = 4
FORMATS = (3, 4)  # the values of ``M format`` this code reads (formats 1-2 have none)
KEYS_KEYSPACE = "keys"
_CHANGE_FORMAT = 2
_CHANGE = struct.Struct(">B20s?QH")  # format, version id, deleted, clock wall, logical
_sha256 = hashlib.sha256
_fromhex = bytes.fromhex
_trusted_ts = HLCTimestamp.trusted
_trusted_version = Version._trusted
_CT_CODE = {t: i for i, t in enumerate(CONTENT_TYPE_CODES)}
_id_bytes = trusted_id_bytes


class KeyRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What ``K<key>`` holds: the current heads and the resolved state served by reads.

    Compact on disk: ``stored_heads`` is empty when the served version is the only head,
    ``ctype`` a code of :data:`CONTENT_TYPE_CODES` for the common types (format 1
    records, which hold the heads and the text, read the same)."""

    stored_heads: tuple[str, ...]
    version: str  # the head whose content is served (resolved winner)
    revision: int  # revision at which ``version`` was applied
    ctype: int | str
    deleted: bool
    value: bytes | None
    hlc_wall: int
    hlc_logical: int

    @property
    def heads(self) -> tuple[str, ...]:
        return self.stored_heads or (self.version,)

    @property
    def content_type(self) -> str:
        c = self.ctype
        return c if type(c) is str else CONTENT_TYPE_CODES[c]  # type: ignore[index]


class FullKeyRecord(KeyRecord, array_like=True, frozen=True, gc=False):
    """A key record with the rest of the served version (format 4): its parents (raw
    20-byte ids), origin and author; the id, HLC, content type, tombstone flag and value
    are the record's own fields, the digest and size are the value's. Older records end
    after ``hlc_logical`` and decode with ``parents = None`` (their version is in V);
    :class:`KeyRecord` decodes either and ignores these fields (the get path)."""

    parents: tuple[bytes, ...] | None = None
    origin: str = ""
    author: str = ""

    def served(self, key: str) -> Version | None:
        """The served version (``None`` for a record of an older format)."""
        ps = self.parents
        if ps is None:
            return None
        value = self.value
        c = self.ctype
        return _trusted_version(
            self.version,
            key,
            tuple([p.hex() for p in ps]) if ps else (),
            _trusted_ts(self.hlc_wall, self.hlc_logical),
            self.origin,
            self.author,
            c if type(c) is str else CONTENT_TYPE_CODES[c],  # type: ignore[index]
            "" if value is None else _sha256(value).hexdigest(),
            0 if value is None else len(value),
            self.deleted,
        )

    def version_record(self, key: str) -> bytes:
        """The encoded V record of the served version, with its value (written by the
        change that stops this record serving it)."""
        value = self.value
        return _enc.encode(
            VersionRecord(
                RECORD_FORMAT,
                _fromhex(self.version),
                key,
                list(self.parents or ()),
                self.hlc_wall,
                self.hlc_logical,
                self.origin,
                self.author,
                self.ctype,
                b"",  # recomputed from the value when read
                0 if value is None else len(value),
                self.deleted,
                self.revision,
                value,
            )
        )


class VersionRecord(EncodedVersion, array_like=True, frozen=True, gc=False):
    """What ``V<version id>`` holds (format 2): the encoded version (its first field is
    its format, 1), then the revision that applied it and its value (``None`` for a
    tombstone). A msgpack array, so its first byte is never zero (format 1 was the
    8-byte revision, then the encoded version)."""

    revision: int
    value: bytes | None

    def version(self) -> Version:
        """The version (format 2 leaves out the digest of an inline value)."""
        if self.digest or self.value is None:
            return self.trusted_version()
        return self.trusted_version(_sha256(self.value).digest())


class ChangeRecord(msgspec.Struct, array_like=True, frozen=True):
    """What ``C<revision>`` held in format 1 (read for old stores)."""

    version: str
    key: str
    deleted: bool
    clock_wall: int  # the store's HLC after this change (restored on open)
    clock_logical: int


_enc = msgspec.msgpack.Encoder()
_enc_fn = _enc.encode
_key_enc = _enc
_key_dec = msgspec.msgpack.Decoder(KeyRecord)
_full_dec = msgspec.msgpack.Decoder(FullKeyRecord)
_vrec_dec = msgspec.msgpack.Decoder(VersionRecord)
_chg_dec = msgspec.msgpack.Decoder(ChangeRecord)


def key_key(key: str) -> bytes:
    return K + key.encode()


def version_key(version_id: str) -> bytes:
    return V + version_id.encode()


def value_key(version_id: str) -> bytes:
    """Format 1 only: where the value of a version was kept."""
    return D + version_id.encode()


def change_key(revision: int) -> bytes:
    return C + _REV.pack(revision)


def meta_key(name: str) -> bytes:
    return M + name.encode()


def idem_key(idempotency_key: str) -> bytes:
    return IDEM + idempotency_key.encode()


APPLIED_KEY = meta_key("applied")
FORMAT_KEY = meta_key("format")


class WriteCommand(msgspec.Struct, frozen=True, kw_only=True, gc=False):
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


class WriteResult(msgspec.Struct, frozen=True, gc=False):
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


class Change(msgspec.Struct, frozen=True, gc=False):
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
        return _enc.encode(
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
    return _enc.encode(
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


def _py_new_key_records(
    kb: bytes,
    value: bytes,
    wall: int,
    logical: int,
    tail: bytes,
    revision: int,
    ct: int | str,
    origin: str,
    author: str,
    clock_wall: int,
    clock_logical: int,
) -> tuple[str, bytes, bytes, bytes]:
    """(version id, K record, C key, C value) of the put of a value to a new key in
    format 4 (parents (), the new version the one head), given the id's ``tail``
    (:func:`id_tail`), the content type's code (or text) and the store's clock after
    the change: the bytes :meth:`StateMachine._plan` writes for it. The C twin
    (``tidekv._putrec``, built by setup.py where it can be) returns the same bytes."""
    vb = _id_bytes(kb, (), value, wall, logical, tail)
    vid = vb.hex()
    record = _enc_fn(((), vid, revision, ct, False, value, wall, logical, (), origin, author))
    change = _CHANGE.pack(_CHANGE_FORMAT, vb, False, clock_wall, clock_logical) + kb
    return vid, record, _CKEY.pack(C, revision), change


try:  # the C twin of _py_new_key_records
    from tidekv._putrec import new_key_records as _c_new_key_records
except ImportError:  # pragma: no cover - the build is optional
    _c_new_key_records = None

_new_key_records: Callable[
    [bytes, bytes, int, int, bytes, int, int | str, str, str, int, int],
    tuple[str, bytes, bytes, bytes],
] = _c_new_key_records or _py_new_key_records


def decode_key_record(raw: bytes) -> KeyRecord:
    try:
        return _key_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"unreadable key record: {exc}") from exc


def decode_full_key_record(raw: bytes) -> FullKeyRecord:
    try:
        return _full_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"unreadable key record: {exc}") from exc


def decode_version_record(raw: bytes) -> tuple[int, Version]:
    """(revision, version) of a ``V`` record of any format."""
    rev, version, _value = decode_version_value(raw)
    return rev, version


def decode_version_value(raw: bytes) -> tuple[int, Version, bytes | None]:
    """(revision, version, value) of a ``V`` record of any format; the value is ``None``
    when the record does not hold it (a tombstone, format 1, or format 2-3 while K
    served the version)."""
    try:
        if raw[:1] == b"\x00":  # format 1: revision (8 bytes BE) + Version.encode()
            return _REV.unpack_from(raw)[0], Version.decode(raw[8:]), None
        r = _vrec_dec.decode(raw)
        if r.format != RECORD_FORMAT:
            raise CorruptionError(f"unknown version record format {r.format}")
        return r.revision, r.version(), r.value
    except CorruptionError:
        raise
    except Exception as exc:
        raise CorruptionError(f"unreadable version record: {exc}") from exc


def encode_change(version_id: str, key: str, deleted: bool, clock: HLCTimestamp) -> bytes:
    return (
        _CHANGE.pack(_CHANGE_FORMAT, _fromhex(version_id), deleted, clock.wall, clock.logical)
        + key.encode()
    )


def decode_change(raw: bytes) -> tuple[str, str, bool, HLCTimestamp]:
    """(version id, key, deleted, clock after the change) of a ``C`` record."""
    try:
        if raw[:1] == b"\x02":
            _f, vid, deleted, wall, logical = _CHANGE.unpack_from(raw)
            return vid.hex(), raw[_CHANGE.size :].decode(), deleted, _trusted_ts(wall, logical)
        rec = _chg_dec.decode(raw)  # format 1
        return rec.version, rec.key, rec.deleted, _trusted_ts(rec.clock_wall, rec.clock_logical)
    except Exception as exc:
        raise CorruptionError(f"unreadable change record: {exc}") from exc


_Fields = tuple[
    str,
    bytes | None,
    str,
    HLCTimestamp,
    str,
    str,
    str | None,
    bool,
    tuple[str, ...] | None,
    bool,
]


def _fields(cmd: WriteCommand) -> _Fields:
    """The arguments of :meth:`StateMachine.write` for ``cmd``."""
    return (
        cmd.key,
        cmd.value,
        cmd.content_type,
        cmd.hlc,
        cmd.origin,
        cmd.author,
        cmd.if_match,
        cmd.if_none_match,
        cmd.parents,
        cmd.require_exists,
    )


class StateMachine:
    """Applies :class:`WriteCommand` s to an engine; reads the versioned state back."""

    def __init__(self, engine: Engine, *, resolver: str | Resolver = "lww", sync: bool = True):
        self.engine = engine
        self.resolver: Resolver = get_resolver(resolver) if isinstance(resolver, str) else resolver
        self.sync = sync
        self.dflt: Keyspace = engine.keyspace(DEFAULT_KEYSPACE)
        self.format = self._layout_format()
        #: where the key records are, and the prefix of their keys there
        self.kspace: Keyspace = engine.keyspace(KEYS_KEYSPACE) if self.format >= 3 else self.dflt
        self.kprefix: bytes = b"" if self.format >= 3 else K
        self._kget = self.kspace.getter()
        self._write_ops = engine.batch_writer()
        #: format 4's put of a new key: K and C in one batch, built inline (put_value)
        self._pair = engine.pair_writer(self.kspace, self.dflt) if self.format >= 4 else None
        self._tails: dict[tuple[str, str, str], bytes] = {}  # id_tail of the puts seen
        self.revision, self.clock = self._recover_position()
        raw = engine.get(APPLIED_KEY)
        self.applied = 0 if raw is None else _REV.unpack(raw)[0]
        """The last Raft entry applied (0 for an embedded store)."""

    # -- recovery ---------------------------------------------------------------

    def _layout_format(self) -> int:
        """4 for a new store (written down), the recorded format for a store of format
        3 or later, 2 for an older one (formats 1 and 2 share the key-record layout)."""
        raw = self.engine.get(FORMAT_KEY)
        if raw is None:
            if next(self.dflt.scan(limit=1), None) is not None:
                return 2  # an older store: it has data but no format record
            self.engine.put(FORMAT_KEY, str(FORMAT_VERSION).encode(), sync=True)
            return FORMAT_VERSION
        try:
            fmt = int(raw)
        except ValueError:
            fmt = -1
        if fmt not in FORMATS:
            raise CorruptionError(f"unknown store format {raw!r}")
        return fmt

    def _recover_position(self) -> tuple[int, HLCTimestamp]:
        last = next(self.engine.scan_prefix(C, reverse=True, limit=1), None)
        if last is None:
            return 0, HLCTimestamp(0, 0)
        rev = _REV.unpack_from(last[0], 1)[0]
        return rev, decode_change(last[1])[3]

    # -- reads ------------------------------------------------------------------

    def key_record(self, key: str) -> FullKeyRecord | None:
        raw = self.kspace.get(self.kprefix + key.encode())
        return None if raw is None else decode_full_key_record(raw)

    def find(self, key: str, version_id: str) -> tuple[int, Version, bytes | None] | None:
        """(revision, version, value) of version ``version_id`` of ``key`` (the value is
        ``None`` for a tombstone), or ``None`` when ``key`` has no such version.

        K first (format 4 keeps the served version only there), then ``V``; a
        superseded version's V record is written in the batch that stops K serving it
        (before K, for engines that apply a batch op by op), so a reader without the
        write lock finds it in one of them. A version that became visible after the
        first K read (its id seen elsewhere) is found by reading K once more."""
        kk = self.kprefix + key.encode()
        raw = self.kspace.get(kk)
        rec = None if raw is None else decode_full_key_record(raw)
        if rec is not None and rec.version == version_id:
            served = rec.served(key)
            if served is not None:
                return rec.revision, served, rec.value
        vraw = self.engine.get(V + version_id.encode())
        if vraw is None:
            raw = self.kspace.get(kk)
            if raw is None:
                return None
            rec = decode_full_key_record(raw)
            served = rec.served(key) if rec.version == version_id else None
            return None if served is None else (rec.revision, served, rec.value)
        rev, version, value = decode_version_value(vraw)
        if version.key != key:
            return None
        if value is None and not version.deleted:
            value = self._old_value(kk, rec, version_id)
        return rev, version, value

    def _old_value(self, kk: bytes, rec: KeyRecord | None, version_id: str) -> bytes:
        """The value of a version whose V record (formats 1-3) does not hold it: in K
        while served, else in ``D`` (the batch that stops K serving it writes D)."""
        if rec is not None and rec.version == version_id and rec.value is not None:
            return rec.value
        value = self.engine.get(D + version_id.encode())
        if value is None:
            raw = self.kspace.get(kk)  # served from a K record newer than ``rec``
            again = None if raw is None else decode_key_record(raw)
            if again is not None and again.version == version_id and again.value is not None:
                return again.value
            raise CorruptionError(f"value of version {version_id} is missing")
        return value

    def version_record(self, version_id: str, key: str) -> tuple[int, Version] | None:
        """(revision, version) of version ``version_id`` of ``key``, or ``None``."""
        got = self.find(key, version_id)
        return None if got is None else (got[0], got[1])

    def lookup(self, version_id: str, key: str) -> Version | None:
        got = self.find(key, version_id)
        return None if got is None else got[1]

    def value_of(self, version: Version) -> bytes | None:
        """The value of a version (``None`` for a tombstone)."""
        if version.deleted:
            return None
        got = self.find(version.key, version.id)
        if got is None or got[2] is None:
            raise CorruptionError(f"value of version {version.id} is missing")
        return got[2]

    def changes(self, since: int = 0, limit: int | None = None) -> Iterator[Change]:
        for k, raw in self.engine.scan(change_key(since + 1), prefix_end(C), limit=limit):
            vid, key, deleted, _clock = decode_change(raw)
            yield Change(_REV.unpack_from(k, 1)[0], key, vid, deleted)

    def scan_keys(
        self, start: bytes, end: bytes | None, limit: int | None = None, *, full: bool = False
    ) -> Iterator[tuple[str, KeyRecord]]:
        """Key records with ``start <= key bytes < end`` (``None``: no bound), in order;
        with ``full``, :class:`FullKeyRecord` s (the served version's other fields)."""
        pre = self.kprefix
        hi = (prefix_end(pre) if pre else None) if end is None else pre + end
        n = len(pre)
        decode: Callable[[bytes], KeyRecord] = decode_full_key_record if full else decode_key_record
        for k, raw in self.kspace.scan(pre + start, hi, limit=limit):
            yield k[n:].decode(), decode(raw)

    # -- the one write path -----------------------------------------------------

    def apply(self, cmd: WriteCommand) -> WriteResult:
        """Apply one change as one atomic engine batch; raise before writing anything
        when a precondition fails."""
        return self.write(*_fields(cmd))

    def write(
        self,
        key: str,
        value: bytes | None,
        content_type: str,
        hlc: HLCTimestamp,
        origin: str,
        author: str = "",
        if_match: str | None = None,
        if_none_match: bool = False,
        parents: tuple[str, ...] | None = None,
        require_exists: bool = False,
    ) -> WriteResult:
        """:meth:`apply` with the command's fields as arguments, in the order of
        :class:`WriteCommand` up to ``require_exists`` (the embedded store's path: no
        command object is built)."""
        ops, result, clock = self._plan(
            key,
            value,
            content_type,
            hlc,
            origin,
            author,
            if_match,
            if_none_match,
            parents,
            require_exists,
        )
        self._write_ops(ops, self.sync)
        self.revision = result.revision
        self.clock = clock
        return result

    def put_value(
        self,
        key: str,
        kb: bytes,
        value: bytes,
        content_type: str,
        hlc: HLCTimestamp,
        origin: str,
        author: str,
        if_none_match: bool = False,
    ) -> WriteResult:
        """:meth:`write` of a value by a local writer (parents: the current heads, no
        if-match), the embedded store's put: ``kb`` is the key's UTF-8, already checked.

        A new key in format 4 (the common put) has a path of its own: its two records
        (K, C) built here, with no op list, version object or second read of K, and
        written by the engine's pair writer, the same bytes :meth:`_plan` writes
        (tests compare both); every other put goes through :meth:`_plan`."""
        pair = self._pair
        raw = self._kget(kb) if pair is not None else b""
        if raw is not None or pair is None:
            ops, result, clock = self._plan(
                key,
                value,
                content_type,
                hlc,
                origin,
                author,
                None,
                if_none_match,
                None,
                False,
                raw,
            )
            self._write_ops(ops, self.sync)
        else:  # the key has no record: parents (), the new version is the one head
            wall = hlc.wall
            logical = hlc.logical
            tk = (origin, content_type, author)
            tail = self._tails.get(tk)
            if tail is None:
                tail = id_tail(origin, False, content_type, author)
                if len(self._tails) < 64:  # bounded: the author is the caller's
                    self._tails[tk] = tail
            revision = self.revision + 1
            c = self.clock
            clock = hlc if wall > c.wall or (wall == c.wall and logical > c.logical) else c
            vid, record, ckey, change = _new_key_records(
                kb,
                value,
                wall,
                logical,
                tail,
                revision,
                _CT_CODE.get(content_type, content_type),
                origin,
                author,
                clock.wall,
                clock.logical,
            )
            pair(kb, record, ckey, change, self.sync)
            result = WriteResult(key, vid, (), revision, hlc, False, (vid,))
        self.revision = result.revision
        self.clock = clock
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
        dflt = self.dflt
        outcome: WriteResult | TideError
        try:
            ops, outcome, clock = self._plan(*_fields(cmd))
        except TideError as exc:
            ops, outcome, clock = [], exc, self.clock
        ops.append((dflt, APPLIED_KEY, _REV.pack(index)))
        if idem is not None:
            ops.append((dflt, idem_key(idem), _encode_outcome(outcome)))
        self.engine.write_batch_multi(ops, sync=False)
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

    def _plan(
        self,
        key: str,
        value: bytes | None,
        content_type: str,
        hlc: HLCTimestamp,
        origin: str,
        author: str,
        if_match: str | None,
        if_none_match: bool,
        parents: tuple[str, ...] | None,
        require_exists: bool,
        raw: bytes | None = b"",
    ) -> tuple[list[KsOp], WriteResult, HLCTimestamp]:
        """The engine ops of one change and its result; raises when a precondition fails.

        One flat function on purpose (it is the hot path of every write): no version
        object, the id over the canonical encoding by :func:`trusted_version_id`, each
        record encoded once. Format 4: a put that K serves is two records (K, C), plus
        the V record of the version K stops serving; older formats: V, C, K and a D
        record for the value K stops serving. ``raw``: the key record as the caller
        just read it under the write lock (b"": not read yet)."""
        kb = key.encode()
        kk = self.kprefix + kb
        kspace = self.kspace
        if raw == b"":
            raw = self._kget(kk)
        if raw is None:
            current = None
            heads: tuple[str, ...] = ()
            absent = True
        else:
            current = decode_full_key_record(raw)
            heads = current.heads
            absent = current.deleted and len(heads) <= 1
        if if_none_match and not absent:
            raise PreconditionFailed(f"key {key!r} exists", key=key, heads=list(heads))
        if if_match is not None and heads != (if_match,):
            raise PreconditionFailed(
                f"version {if_match} is not the sole current head of {key!r}",
                key=key,
                heads=list(heads),
            )
        if require_exists and absent:
            raise KeyNotFound(f"key {key!r} not found", key=key)

        local = parents is None  # supersedes every head
        if parents is None:
            parents = heads  # sorted, unique (heads always are)
        else:
            if isinstance(parents, str):
                raise InvalidInput("parents must be a sequence of version ids, not one string")
            parents = tuple(sorted({check_version_id(p) for p in parents}))
            for p in parents:
                if not self._has_version(key, p, current):
                    raise VersionNotFound(f"parent version {p} not found", version=p)

        if value is None:
            digest, size, deleted = b"", 0, True
        else:
            digest, size, deleted = _sha256(value).digest(), len(value), False
        wall, logical = hlc.wall, hlc.logical
        vid = trusted_version_id(
            key, parents, digest, wall, logical, origin, deleted, content_type, author
        )
        revision = self.revision + 1
        c = self.clock
        clock = hlc if wall > c.wall or (wall == c.wall and logical > c.logical) else c

        if local:
            new_heads: tuple[str, ...] = (vid,)
        else:
            ps = set(parents)
            new_heads = tuple(sorted({h for h in heads if h not in ps} | {vid}))
        ct = _CT_CODE.get(content_type, content_type)
        pb = [_fromhex(p) for p in parents] if parents else []
        encode = _enc.encode
        dflt = self.dflt
        inline = self.format >= 4
        ops: list[KsOp] = []
        if len(new_heads) == 1:  # the common case: the new version is served
            served_id = vid
            if inline:
                record = encode(
                    (
                        (),
                        vid,
                        revision,
                        ct,
                        deleted,
                        value,
                        wall,
                        logical,
                        pb,
                        origin,
                        author,
                    )
                )
            else:
                record = encode(KeyRecord((), vid, revision, ct, deleted, value, wall, logical))
        else:
            new = _trusted_version(
                vid, key, parents, hlc, origin, author, content_type, digest.hex(), size, deleted
            )
            served, served_rev, served_value = self._resolve(new_heads, new, revision, value)
            served_id = served.id
            sct = _CT_CODE.get(served.content_type, served.content_type)
            fields8 = (
                new_heads,
                served_id,
                served_rev,
                sct,
                served.deleted,
                served_value,
                served.hlc.wall,
                served.hlc.logical,
            )
            if inline:
                record = encode(
                    (
                        *fields8,
                        [_fromhex(p) for p in served.parents],
                        served.origin,
                        served.author,
                    )
                )
            else:
                record = encode(KeyRecord(*fields8))
        in_k = served_id == vid
        vid_b = _fromhex(vid)
        if not (inline and in_k):
            # format 4: a version K does not serve has its V record with its value;
            # older formats: every version has one, the value only when not in K
            ops.append(
                (
                    dflt,
                    V + vid.encode(),
                    encode(
                        VersionRecord(
                            RECORD_FORMAT,
                            vid_b,
                            key,
                            pb,
                            wall,
                            logical,
                            origin,
                            author,
                            ct,
                            digest if in_k else b"",  # an inline value's: recomputed
                            size,
                            deleted,
                            revision,
                            None if in_k else value,
                        )
                    ),
                )
            )
        change = (
            dflt,
            C + _REV.pack(revision),
            _CHANGE.pack(_CHANGE_FORMAT, vid_b, deleted, clock.wall, clock.logical) + kb,
        )
        if current is not None and current.version != served_id:
            # the version K served until now is no longer served
            if current.parents is not None:  # format 4: its V record, with its value
                ops.append((dflt, V + current.version.encode(), current.version_record(key)))
            elif current.value is not None and not current.deleted:
                ops.append((dflt, D + current.version.encode(), current.value))  # older
        if inline:
            # V records, then K, then C: an engine that applies a batch op by op shows
            # a reader without the lock a key record only after the V records it needs,
            # and a change entry only after the key record that serves its version
            ops.append((kspace, kk, record))
            ops.append(change)
        else:
            ops.insert(1, change)  # older formats: V, C, (D), K
            ops.append((kspace, kk, record))
        return ops, WriteResult(key, vid, parents, revision, hlc, deleted, new_heads), clock

    def _has_version(self, key: str, version_id: str, current: KeyRecord | None) -> bool:
        """Whether ``key`` has version ``version_id`` (the same answer in every format,
        so replicas of different formats apply a command alike)."""
        if current is not None and current.version == version_id:
            return True
        raw = self.engine.get(V + version_id.encode())
        return raw is not None and decode_version_record(raw)[1].key == key

    def _resolve(
        self, heads: tuple[str, ...], new: Version, new_rev: int, new_value: bytes | None
    ) -> tuple[Version, int, bytes | None]:
        """Resolve siblings; returns the served version, its revision and its value (the
        version's own value: K holds the served version whole)."""
        versions: list[Version] = []
        revs: dict[str, int] = {new.id: new_rev}
        values: dict[str, bytes | None] = {new.id: new_value}
        for h in heads:
            if h == new.id:
                versions.append(new)
                continue
            got = self.find(new.key, h)
            if got is None:
                raise CorruptionError(f"head version {h} is missing")
            revs[h], version, values[h] = got
            versions.append(version)

        def load(v: Version) -> bytes | None:
            return values[v.id]

        res = self.resolver.resolve(versions, load)
        served = res.version
        if served is None or res.unresolved:
            # Unresolved (manual policy) or merged content: the record still names one
            # head (last-write-wins) so ETags and as-of reads work; readers see
            # `unresolved`.
            served = max(versions, key=order_key)
        return served, revs[served.id], values[served.id]


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
        if not v.deleted:
            sm.value_of(v)  # raises CorruptionError when the value is missing
    records: list[tuple[str, FullKeyRecord]] = []
    for key, krec in sm.scan_keys(b"", None, full=True):
        rec = cast(FullKeyRecord, krec)
        records.append((key, rec))
        served = rec.served(key)
        if served is None:
            continue  # an older record: its version has a V record
        if served.recompute_id() != rec.version:
            raise CorruptionError(f"key {key!r} holds version {rec.version} with other fields")
        if versions.setdefault(rec.version, rec.revision) != rec.revision:
            raise CorruptionError(f"version {rec.version} has two revisions")
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
    for key, rec in records:
        if rec.version not in rec.heads:
            raise CorruptionError(f"key {key!r} serves {rec.version}, which is not a head")
        for h in rec.heads:
            if h not in versions:
                raise CorruptionError(f"key {key!r} has a missing head {h}")
        got = sm.find(key, rec.version)
        if got is None:
            raise CorruptionError(f"key {key!r} serves {rec.version}, which is missing")
        served_rev, served, value = got
        if served.key != key or served.deleted != rec.deleted or served_rev != rec.revision:
            raise CorruptionError(f"key {key!r} record disagrees with version {served.id}")
        if not rec.deleted and rec.value != value:
            raise CorruptionError(f"key {key!r} inline value differs from its version")
    return {"keys": len(records), "versions": len(versions), "revision": sm.revision}
