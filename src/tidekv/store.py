"""The embedded versioned store: ``tidekv.open(path, engine="lsm")``.

A :class:`Store` validates input, stamps each change with the hybrid logical clock and
the store's origin, and hands it to the :class:`~tidekv.statemachine.StateMachine`,
which writes the change as one atomic engine batch. Reads go straight to the engine.

Thread safety: writes are serialised by one lock (the HLC and the revision counter are
shared state); reads take no lock: a change is one engine batch whose key record comes
last (an engine that applies a batch op by op shows it after the records it refers to),
version records never change once written, and a version that stops being served by
its key record gets its ``V`` record in the same batch (see :meth:`StateMachine.find`).
"""

from __future__ import annotations

import builtins
import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from tidekv.errors import (
    InvalidInput,
    InvalidKey,
    InvalidValue,
    KeyNotFound,
    KeyTooLarge,
    Siblings,
    StoreClosed,
    ValueTooLarge,
    VersionNotFound,
)
from tidekv.statemachine import (
    Change,
    FullKeyRecord,
    KeyRecord,
    StateMachine,
    WriteResult,
    decode_key_record,
    decode_version_record,
    meta_key,
    verify,
    version_key,
)
from tidekv.storage import Engine, open_engine, prefix_end
from tidekv.versioning import (
    BYTES_CONTENT_TYPE,
    CONTENT_TYPE_CODES,
    HLC,
    JSON_CONTENT_TYPE,
    Diff,
    HLCTimestamp,
    Version,
    check_version_id,
    diff_values,
    heads_of,
    history,
    is_json_type,
    validate_json,
)
from tidekv.versioning import TEXT_CONTENT_TYPE as TEXT_CONTENT_TYPE  # re-exported

DEFAULT_MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 1 << 20


builtins_open = builtins.open
_trusted_ts = HLCTimestamp.trusted
_key_decode = msgspec.msgpack.Decoder(KeyRecord).decode


_time_ns = time.time_ns


def wall_clock_ms() -> int:
    """Physical time in milliseconds since the Unix epoch (the store's default clock)."""
    return _time_ns() // 1_000_000


class Item(msgspec.Struct, frozen=True, gc=False):
    """A key's value as read: the content and the version it belongs to."""

    key: str
    value: bytes
    content_type: str
    version: str
    revision: int
    hlc: HLCTimestamp
    siblings: int = 1

    def json(self) -> Any:
        """The value parsed as JSON."""
        return msgspec.json.decode(self.value)

    def text(self) -> str:
        return self.value.decode()


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A version with the revision at which this store applied it."""

    version: Version
    revision: int

    def to_dict(self) -> dict[str, object]:
        d = self.version.to_dict()
        d["revision"] = self.revision
        return d


AsOf = int | dt.datetime | str | None


class Store:
    """A versioned key-value and document store on one storage engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        origin: str | None = None,
        resolver: str = "lww",
        sync: bool = True,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], int] = wall_clock_ms,
        author: str = "",
    ) -> None:
        self.engine = engine
        self.max_key_bytes = max_key_bytes
        self.max_value_bytes = max_value_bytes
        self.author = author
        self._clock = clock
        self._ns = clock is wall_clock_ms  # the hot path reads time_ns itself
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._followers = 0  # change iterators waiting on _changed
        self._closed = False
        self.sm = StateMachine(engine, resolver=resolver, sync=sync)
        self._manual = self.sm.resolver.name == "manual"
        self._kget = self.sm.kspace.get  # the read hot path: one engine get
        self._kprefix = self.sm.kprefix
        self.origin = self._load_origin(origin)
        self._hlc = HLC(self.sm.clock)
        self._stamp: HLCTimestamp | None = None  # the time stamp of the last local write

    def _load_origin(self, wanted: str | None) -> str:
        stored = self.engine.get(meta_key("origin"))
        if stored is not None and wanted is None:
            return stored.decode()
        origin = wanted or secrets.token_hex(8)
        if stored is None or stored.decode() != origin:
            self.engine.put(meta_key("origin"), origin.encode(), sync=True)
        return origin

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.engine.close()
                self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    def verify(self) -> dict[str, int]:
        """Check the store's internal consistency (raises CorruptionError)."""
        with self._lock:
            self._check_open()
            return verify(self.sm)

    @property
    def revision(self) -> int:
        """The revision of the newest change."""
        return self.sm.revision

    # -- validation -------------------------------------------------------------

    def check_key(self, key: object) -> str:
        """``key`` when it is a valid key, else :class:`InvalidKey` / :class:`KeyTooLarge`."""
        self.key_bytes(key)
        return key  # type: ignore[return-value]  # key_bytes proved it is a str

    def key_bytes(self, key: object) -> bytes:
        """The UTF-8 bytes of a valid key (raises like :meth:`check_key`)."""
        if type(key) is str:  # the hot path
            try:
                kb = key.encode()
            except UnicodeEncodeError:
                raise InvalidKey("the key is not valid UTF-8") from None
            if kb and len(kb) <= self.max_key_bytes:
                return kb
        try:
            kb = key.encode()  # type: ignore[attr-defined]
        except (AttributeError, UnicodeEncodeError):
            if not isinstance(key, str):
                raise InvalidKey(f"a key must be a string, not {type(key).__name__}") from None
            raise InvalidKey("the key is not valid UTF-8") from None
        if not isinstance(key, str):
            raise InvalidKey(f"a key must be a string, not {type(key).__name__}")
        if not kb:
            raise InvalidKey("the key is empty")
        if len(kb) > self.max_key_bytes:
            raise KeyTooLarge(
                f"the key is {len(kb)} bytes; the limit is {self.max_key_bytes}",
                size=len(kb),
                limit=self.max_key_bytes,
            )
        return kb  # type: ignore[no-any-return]

    def encode_value(self, value: object, content_type: str | None) -> tuple[bytes, str]:
        """Bytes and content type for ``value``: bytes as given, ``str`` as UTF-8 text,
        anything else as a JSON document. A JSON content type must hold valid JSON."""
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            ctype = content_type or BYTES_CONTENT_TYPE
        elif isinstance(value, str):
            data = value.encode()
            ctype = content_type or TEXT_CONTENT_TYPE
        else:
            if content_type is not None and not is_json_type(content_type):
                raise InvalidValue(
                    f"a {type(value).__name__} value can only be stored as JSON, "
                    f"not as {content_type!r}"
                )
            try:
                data = msgspec.json.encode(value)
            except (TypeError, msgspec.EncodeError) as exc:
                raise InvalidValue(f"the value cannot be encoded as JSON: {exc}") from None
            ctype = content_type or JSON_CONTENT_TYPE
        if len(data) > self.max_value_bytes:
            raise ValueTooLarge(
                f"the value is {len(data)} bytes; the limit is {self.max_value_bytes}",
                size=len(data),
                limit=self.max_value_bytes,
            )
        if ctype is not BYTES_CONTENT_TYPE and is_json_type(ctype):
            validate_json(data)
        return data, ctype

    # -- writes -----------------------------------------------------------------

    def _write(
        self,
        key: str,
        value: bytes | None,
        content_type: str,
        if_match: str | None,
        if_none_match: bool,
        author: str | None,
        require_exists: bool = False,
        kb: bytes | None = None,
    ) -> WriteResult:
        """One change under the write lock; ``kb`` (the key's checked UTF-8) for the put
        of a value with no if-match: :meth:`StateMachine.put_value`."""
        if if_match is not None:
            check_version_id(if_match)
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is closed")
            sm = self.sm
            hlc = self._hlc
            clock = sm.clock
            # (after a local write it is the time stamp that write got: no comparison)
            if clock is not self._stamp and clock > hlc.last:
                # versions applied from elsewhere (replication) moved the clock on: a
                # local write must come after everything it may have seen
                hlc.update(clock, self._clock())
            ts = self._stamp = hlc.now(_time_ns() // 1_000_000 if self._ns else self._clock())
            if kb is not None and value is not None:
                result = sm.put_value(
                    key,
                    kb,
                    value,
                    content_type,
                    ts,
                    self.origin,
                    self.author if author is None else author,
                    if_none_match,
                )
            else:
                result = sm.write(
                    key,
                    value,
                    content_type,
                    ts,
                    self.origin,
                    self.author if author is None else author,
                    if_match,
                    if_none_match,
                    None,
                    require_exists,
                )
            if self._followers:
                self._changed.notify_all()
            return result

    def put(
        self,
        key: str,
        value: object,
        *,
        content_type: str | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        author: str | None = None,
    ) -> WriteResult:
        """Write a new version of ``key``.

        ``value``: bytes (stored as given), str (UTF-8 text) or any JSON-encodable object
        (a JSON document). ``if_match``: write only if that version is the key's sole
        current head; ``if_none_match``: write only if the key is absent.
        """
        if type(key) is str and type(value) is bytes and content_type is None:
            # the hot path: a str key, bytes as given (the checks of key_bytes, inline)
            try:
                kb: bytes | None = key.encode()
            except UnicodeEncodeError:
                kb = None
            if (
                kb
                and len(kb) <= self.max_key_bytes
                and len(value) <= self.max_value_bytes
                and if_match is None
            ):
                return self._write(
                    key, value, BYTES_CONTENT_TYPE, None, if_none_match, author, False, kb
                )
        kb = self.key_bytes(key)
        if if_match is not None:
            kb = None  # put_value is for writes without if-match
        if type(value) is bytes and content_type is None:  # bytes as given
            if len(value) > self.max_value_bytes:
                self.encode_value(value, None)  # raises ValueTooLarge
            return self._write(
                key, value, BYTES_CONTENT_TYPE, if_match, if_none_match, author, False, kb
            )
        data, ctype = self.encode_value(value, content_type)
        return self._write(key, data, ctype, if_match, if_none_match, author, False, kb)

    def delete(
        self, key: str, *, if_match: str | None = None, author: str | None = None
    ) -> WriteResult:
        """Write a tombstone version (history is kept). 404 when there is nothing to delete."""
        key = self.check_key(key)
        return self._write(
            key,
            None,
            BYTES_CONTENT_TYPE,
            if_match=if_match,
            if_none_match=False,
            author=author,
            require_exists=True,
        )

    def rollback(
        self, key: str, to: str, *, if_match: str | None = None, author: str | None = None
    ) -> WriteResult:
        """A new version with the content of version ``to`` whose parents are the current
        heads (rolling back to a tombstone deletes the key again)."""
        key = self.check_key(key)
        target = self._version_of(key, to)
        value = self.sm.value_of(target)
        return self._write(
            key,
            value,
            target.content_type,
            if_match=if_match,
            if_none_match=False,
            author=author,
        )

    # -- reads ------------------------------------------------------------------

    def _record(self, key: str) -> FullKeyRecord | None:
        self._check_open()
        return self.sm.key_record(self.check_key(key))

    def get(self, key: str, *, version: str | None = None, as_of: AsOf = None) -> Item:
        """The current value of ``key`` (or a given ``version``, or the value ``as_of`` a
        revision number, a datetime or an RFC 3339 string). Raises :class:`KeyNotFound`."""
        if version is not None:
            return self.get_version(key, version)
        if as_of is not None:
            return self._get_as_of(key, as_of)
        # the hot path: one engine read, no second validation of what we wrote
        if self._closed:
            raise StoreClosed("the store is closed")
        try:
            kb = key.encode() if type(key) is str else b""
        except UnicodeEncodeError:
            kb = b""
        if not kb or len(kb) > self.max_key_bytes:
            kb = self.key_bytes(key)  # raises the right error (or accepts a str subclass)
        raw = self._kget(self._kprefix + kb)
        if raw is None:
            raise KeyNotFound(f"key {key!r} not found", key=key)
        try:
            rec = _key_decode(raw)
        except msgspec.DecodeError:
            rec = decode_key_record(raw)  # raises CorruptionError
        if rec.deleted or rec.value is None:
            raise KeyNotFound(f"key {key!r} not found", key=key)
        siblings = len(rec.stored_heads) or 1
        if siblings > 1 and self._manual:
            raise Siblings(
                f"key {key!r} has {siblings} siblings to resolve",
                key=key,
                siblings=list(rec.heads),
            )
        ctype = rec.ctype
        return Item(
            key,
            rec.value,
            ctype if type(ctype) is str else CONTENT_TYPE_CODES[ctype],  # type: ignore[index]
            rec.version,
            rec.revision,
            _trusted_ts(rec.hlc_wall, rec.hlc_logical),
            siblings,
        )

    def heads(self, key: str) -> list[str]:
        """The key's current head version ids (several = siblings)."""
        rec = self._record(key)
        return [] if rec is None else list(rec.heads)

    def _find(self, key: str, version_id: str) -> tuple[int, Version, bytes | None]:
        check_version_id(version_id)
        self._check_open()
        got = self.sm.find(key, version_id)
        if got is None:
            raise VersionNotFound(
                f"version {version_id} of key {key!r} not found", key=key, version=version_id
            )
        return got

    def _version_of(self, key: str, version_id: str) -> Version:
        return self._find(key, version_id)[1]

    def get_version(self, key: str, version_id: str) -> Item:
        """The content of one version. A tombstone version raises :class:`KeyNotFound`."""
        key = self.check_key(key)
        rev, v, value = self._find(key, version_id)
        if value is None:
            raise KeyNotFound(
                f"version {version_id} of {key!r} is a deletion", key=key, version=version_id
            )
        return Item(key, value, v.content_type, v.id, rev, v.hlc)

    def history(
        self, key: str, *, limit: int | None = None, before: str | None = None
    ) -> list[VersionInfo]:
        """The key's versions, newest first (a child always before its parents).
        ``before``: continue after that version (pagination)."""
        rec = self._record(key)
        if rec is None:
            raise KeyNotFound(f"key {key!r} not found", key=key)
        revs: dict[str, int] = {}
        sm = self.sm
        served = rec.served(key)  # format 4: the served version is whole in K
        vget = self.engine.get

        def lookup(vid: str) -> Version | None:
            if served is not None and vid == served.id:
                revs[vid] = rec.revision
                return served
            raw = vget(version_key(vid))
            got = decode_version_record(raw) if raw is not None else sm.version_record(vid, key)
            if got is None:
                return None
            revs[vid] = got[0]
            return got[1]

        if before is not None:
            check_version_id(before)
        versions = history(rec.heads, lookup)
        if before is not None:
            ids = [v.id for v in versions]
            if before not in ids:
                raise VersionNotFound(
                    f"version {before} of key {key!r} not found", key=key, version=before
                )
            versions = versions[ids.index(before) + 1 :]
        if limit is not None:
            versions = versions[:limit]
        return [VersionInfo(v, revs[v.id]) for v in versions]

    def _get_as_of(self, key: str, as_of: AsOf) -> Item:
        """The resolved value at a past revision or time: the heads of the versions that
        existed then, resolved like the present."""
        by_revision = isinstance(as_of, int) and not isinstance(as_of, bool)
        if by_revision:
            assert isinstance(as_of, int)
            if as_of < 0:
                raise InvalidInput(f"revision {as_of} is negative")
            cutoff = as_of
        else:
            cutoff = parse_time(as_of)  # bad input fails before any lookup
        all_versions = self.history(key)
        if by_revision:
            keep = [vi.version for vi in all_versions if vi.revision <= cutoff]
        else:
            keep = [vi.version for vi in all_versions if vi.version.hlc.wall <= cutoff]
        revs = {vi.version.id: vi.revision for vi in all_versions}
        if not keep:
            raise KeyNotFound(f"key {key!r} did not exist at {as_of}", key=key)
        res = self.sm.resolver.resolve(heads_of(keep), self.sm.value_of)
        if res.value is None or res.version is None:
            raise KeyNotFound(f"key {key!r} was deleted at {as_of}", key=key)
        v = res.version
        return Item(key, res.value, res.content_type, v.id, revs[v.id], v.hlc, res.siblings)

    def scan(
        self,
        prefix: str | None = None,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Item]:
        """Current values in key order: keys starting with ``prefix`` and/or in
        ``[start, end)``; deleted keys are skipped."""
        self._check_open()
        lo = (prefix or "").encode()
        hi_prefix = prefix_end(lo) if prefix else None
        if start is not None and start.encode() > lo:
            lo = start.encode()
        hi = hi_prefix
        if end is not None:
            end_k = end.encode()
            hi = end_k if hi is None or end_k < hi else hi
        if limit is not None and limit < 0:
            raise InvalidInput("limit must not be negative")
        n = 0
        for key, rec in self.sm.scan_keys(lo, hi):
            if limit is not None and n >= limit:
                return
            if rec.deleted or rec.value is None:
                continue
            n += 1
            yield Item(
                key,
                rec.value,
                rec.content_type,
                rec.version,
                rec.revision,
                _trusted_ts(rec.hlc_wall, rec.hlc_logical),
                len(rec.heads),
            )

    def diff(self, key: str, from_version: str, to_version: str | None = None) -> Diff:
        """What changed between two versions (``to_version`` defaults to the current one)."""
        key = self.check_key(key)
        old = self._version_of(key, from_version)
        if to_version is None:
            rec = self._record(key)
            if rec is None:
                raise KeyNotFound(f"key {key!r} not found", key=key)
            to_version = rec.version
        new = self._version_of(key, to_version)
        return diff_values(
            self.sm.value_of(old), old.content_type, self.sm.value_of(new), new.content_type
        )

    def changes(
        self, since: int = 0, *, follow: bool = False, timeout: float | None = None
    ) -> Iterator[Change]:
        """Changes with a revision greater than ``since``, in order. With ``follow`` the
        iterator waits for new changes (until ``timeout`` seconds pass with none, or
        the store closes)."""
        if since < 0:
            raise InvalidInput("since must not be negative")
        while True:
            self._check_open()
            for change in self.sm.changes(since):
                since = change.revision
                yield change
            if not follow:
                return
            with self._changed:
                if self._closed:
                    return

                def advanced(seen: int = since) -> bool:
                    return self._closed or self.sm.revision > seen

                if self.sm.revision > since:
                    continue
                self._followers += 1
                try:
                    if not self._changed.wait_for(advanced, timeout):
                        return
                finally:
                    self._followers -= 1


def parse_time(when: dt.datetime | str | object) -> int:
    """Milliseconds since the epoch of a datetime or an RFC 3339 string."""
    if isinstance(when, str):
        try:
            when = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{when!r} is neither a revision number nor an RFC 3339 time"
            ) from None
    if not isinstance(when, dt.datetime):
        raise InvalidInput(f"as_of must be a revision or a time, not {type(when).__name__}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


MARKER_FILE = "tidekv.json"
DEFAULT_ENGINE = "lsm"


def _engine_for(path: str, engine: str | None) -> str:
    """The engine of the store in ``path``: recorded in its marker file on creation, so
    a store is always reopened with the engine that wrote it."""
    import json
    import os

    marker = os.path.join(path, MARKER_FILE)
    try:
        with builtins_open(marker, encoding="utf-8") as f:
            recorded = str(json.load(f)["engine"])
    except FileNotFoundError:
        recorded = None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{marker} is not a tidekv store marker: {exc}") from None
    if recorded is not None:
        if engine is not None and engine != recorded:
            raise InvalidInput(
                f"the store in {path} uses the {recorded!r} engine, not {engine!r}",
                engine=engine,
            )
        return recorded
    chosen = engine or DEFAULT_ENGINE
    from tidekv.storage import engine_class

    engine_class(chosen)  # unknown engine names fail before anything is created
    if chosen != "memory":
        os.makedirs(path, exist_ok=True)
        tmp = marker + ".tmp"
        with builtins_open(tmp, "w", encoding="utf-8") as f:
            json.dump({"engine": chosen, "format": 1}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker)
    return chosen


def open(
    path: str,
    engine: str | None = None,
    *,
    engine_options: dict[str, Any] | None = None,
    **store_options: Any,
) -> Store:
    """Open (creating when needed) an embedded store in directory ``path``.

    ``engine``: "lsm" (RocksDB, the default for a new store), "btree" (LMDB), "hash"
    (Bitcask-style) or "memory" (not durable; ``path`` is ignored). An existing store
    reopens with the engine that created it. Store options: ``sync`` (default True:
    every write is fsynced before it returns), ``origin``, ``resolver``,
    ``max_key_bytes``, ``max_value_bytes``, ``author``, ``clock``.
    """
    import os

    if engine == "memory":
        eng = open_engine("memory", None, **(engine_options or {}))
    else:
        name = _engine_for(path, engine)
        eng = open_engine(name, os.path.join(path, "data"), **(engine_options or {}))
    try:
        return Store(eng, **store_options)
    except BaseException:
        eng.close()
        raise
