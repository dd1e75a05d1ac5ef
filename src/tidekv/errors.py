"""The one exception tree of tidekv.

Every error the package raises on purpose is a :class:`TideError`. Each class carries a
stable machine ``code`` (the ``error.code`` of the HTTP API), the HTTP status that fits,
and the CLI exit code, so the edges (HTTP server, CLI) convert errors in exactly one
place and never show a stack trace::

    TideError                       code               http  cli
    ├── InvalidInput                invalid_input      400   2
    │   ├── InvalidKey              invalid_key        400   2
    │   ├── InvalidValue            invalid_value      400   2
    │   │   └── InvalidJSON         invalid_json       400   2
    │   ├── InvalidVersionId        invalid_version    400   2
    │   └── ValueTooLarge           too_large          413   2
    │       └── KeyTooLarge         too_large          413   2
    ├── NotFound                    not_found          404   1
    │   ├── KeyNotFound             not_found          404   1
    │   └── VersionNotFound         version_not_found  404   1
    ├── Siblings                    siblings           300   1
    ├── PreconditionFailed          precondition_failed 412  1
    ├── Conflict                    conflict           409   1
    ├── Gone                        gone               410   1
    ├── Unavailable                 unavailable        503   1
    │   ├── NotLeader               not_leader         503   1
    │   └── Timeout                 timeout            503   1
    ├── StoreClosed                 closed             503   1
    └── StorageError                storage_error      500   1
        └── CorruptionError         corruption         500   1
"""

from __future__ import annotations

from typing import Any


class TideError(Exception):
    """Base of every error tidekv raises on purpose."""

    code: str = "internal"
    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body of the HTTP API: ``{"error": {"code", "message", ...}}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return {"error": body}


class InvalidInput(TideError):
    code = "invalid_input"
    http_status = 400
    exit_code = 2


class InvalidKey(InvalidInput):
    code = "invalid_key"


class InvalidValue(InvalidInput):
    code = "invalid_value"


class InvalidJSON(InvalidValue):
    code = "invalid_json"


class InvalidVersionId(InvalidInput):
    code = "invalid_version"


class ValueTooLarge(InvalidInput):
    code = "too_large"
    http_status = 413


class KeyTooLarge(ValueTooLarge):
    """A key longer than the configured limit (413 like an oversized value)."""


class NotFound(TideError):
    code = "not_found"
    http_status = 404
    exit_code = 1


class KeyNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    code = "version_not_found"


class Siblings(TideError):
    """The key has several heads and its policy (``manual``) refuses to choose; the
    details list them. Resolve by writing a version whose parents are all the heads."""

    code = "siblings"
    http_status = 300


class PreconditionFailed(TideError):
    code = "precondition_failed"
    http_status = 412


class Conflict(TideError):
    code = "conflict"
    http_status = 409


class Gone(TideError):
    """The history asked for was compacted away (a watch cursor that is too old)."""

    code = "gone"
    http_status = 410


class Unavailable(TideError):
    code = "unavailable"
    http_status = 503


class NotLeader(Unavailable):
    """This node does not lead the shard. ``details``: ``leader`` (node id or None) and
    ``leader_url`` (the leader's HTTP base URL, or None when no leader is known); the
    HTTP layer proxies the request there."""

    code = "not_leader"


class Timeout(Unavailable):
    """The request did not complete in time (no quorum, leader change); its outcome is
    unknown: retry with the same Idempotency-Key."""

    code = "timeout"


class StoreClosed(TideError):
    code = "closed"
    http_status = 503


class StorageError(TideError):
    code = "storage_error"
    http_status = 500


class CorruptionError(StorageError):
    code = "corruption"


__all__ = [
    "Conflict",
    "CorruptionError",
    "Gone",
    "InvalidInput",
    "InvalidJSON",
    "InvalidKey",
    "InvalidValue",
    "InvalidVersionId",
    "KeyNotFound",
    "KeyTooLarge",
    "NotFound",
    "NotLeader",
    "PreconditionFailed",
    "Siblings",
    "StorageError",
    "StoreClosed",
    "TideError",
    "Timeout",
    "Unavailable",
    "ValueTooLarge",
    "VersionNotFound",
]
