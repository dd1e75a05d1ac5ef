"""The OpenAPI 3.1 description of API v1, served at ``GET /openapi.json``.

Written by hand as data (the app has no framework to derive it from); a test checks
that every route and query parameter of :class:`tidekv.http.App` is described here and
that nothing here is missing from the app.
"""

from __future__ import annotations

from typing import Any

from tidekv.node.config import MAX_NODE_ID

__all__ = ["openapi_document"]

_NODE_ID = {"type": "integer", "minimum": 1, "maximum": MAX_NODE_ID}

_ERROR_CODES = [
    "invalid_input",
    "invalid_key",
    "invalid_value",
    "invalid_json",
    "invalid_version",
    "too_large",
    "not_found",
    "no_route",
    "version_not_found",
    "siblings",
    "precondition_failed",
    "conflict",
    "gone",
    "method_not_allowed",
    "unavailable",
    "not_leader",
    "timeout",
    "closed",
    "storage_error",
    "corruption",
    "internal",
]

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "examples": _ERROR_CODES},
                    "message": {"type": "string"},
                },
                "additionalProperties": True,
                "description": "Details vary by code: key, heads, siblings, leader, "
                "leader_url, parameter, header, limit, size, allow, ...",
            }
        },
    },
    "WriteResult": {
        "type": "object",
        "required": ["key", "version", "parents", "revision", "shard", "hlc"],
        "properties": {
            "key": {"type": "string"},
            "version": {"$ref": "#/components/schemas/VersionId"},
            "parents": {"type": "array", "items": {"$ref": "#/components/schemas/VersionId"}},
            "revision": {"type": "integer", "minimum": 1},
            "shard": {"type": "integer", "minimum": 0},
            "hlc": {"type": "string", "description": "<wall ms>.<logical>"},
            "deleted": {"type": "boolean"},
        },
    },
    "VersionId": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
    "Item": {
        "type": "object",
        "required": ["key", "version", "revision", "content_type"],
        "properties": {
            "key": {"type": "string"},
            "version": {"$ref": "#/components/schemas/VersionId"},
            "revision": {"type": "integer"},
            "hlc": {"type": "string"},
            "content_type": {"type": "string"},
            "value": {"description": "the JSON document (JSON content types)"},
            "value_b64": {"type": "string", "contentEncoding": "base64"},
            "siblings": {"type": "integer", "minimum": 2},
        },
    },
    "Listing": {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
            "next": {"type": ["string", "null"], "description": "pass as cursor="},
        },
    },
    "VersionInfo": {
        "type": "object",
        "required": [
            "version",
            "parents",
            "hlc",
            "time",
            "origin",
            "author",
            "deleted",
            "revision",
            "size",
            "content_type",
        ],
        "properties": {
            "version": {"$ref": "#/components/schemas/VersionId"},
            "key": {"type": "string"},
            "parents": {"type": "array", "items": {"$ref": "#/components/schemas/VersionId"}},
            "hlc": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "origin": {"type": "string"},
            "author": {"type": "string"},
            "deleted": {"type": "boolean"},
            "revision": {"type": "integer"},
            "size": {"type": "integer"},
            "content_type": {"type": "string"},
            "digest": {"type": "string"},
        },
    },
    "History": {
        "type": "object",
        "required": ["key", "versions"],
        "properties": {
            "key": {"type": "string"},
            "versions": {"type": "array", "items": {"$ref": "#/components/schemas/VersionInfo"}},
            "next": {"type": ["string", "null"], "description": "pass as before="},
        },
    },
    "Diff": {
        "type": "object",
        "required": ["format", "changes"],
        "properties": {
            "format": {"enum": ["json-patch", "text", "bytes"]},
            "changes": {"description": "RFC 6902 operations, text hunks or a bytes summary"},
        },
    },
    "ChangeEvent": {
        "type": "object",
        "required": ["type", "key", "version", "parents", "revision", "shard", "hlc"],
        "properties": {
            "cursor": {"type": "string"},
            "type": {"enum": ["put", "delete"]},
            "key": {"type": "string"},
            "version": {"$ref": "#/components/schemas/VersionId"},
            "parents": {"type": "array", "items": {"$ref": "#/components/schemas/VersionId"}},
            "revision": {"type": "integer"},
            "shard": {"type": "integer"},
            "hlc": {"type": "string"},
            "content_type": {"type": "string"},
            "value": {},
            "value_b64": {"type": "string"},
        },
    },
    "Cluster": {
        "type": "object",
        "required": ["cluster_id", "nodes", "shards"],
        "properties": {
            "cluster_id": {"type": "string"},
            "shard_count": {"type": "integer", "minimum": 1},
            "meta": {
                "type": "object",
                "description": "A sharded cluster's metadata group: voters, leader, revision.",
            },
            "moves": {
                "type": "array",
                "items": {"type": "object"},
                "description": "Shard moves in progress (a sharded cluster).",
            },
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "address", "state"],
                    "properties": {
                        "id": {"type": "integer"},
                        "address": {"type": "string"},
                        "state": {"type": "string"},
                    },
                },
            },
            "shards": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "leader", "term", "replicas", "commit_index"],
                    "properties": {
                        "id": {"type": "integer"},
                        "leader": {"type": ["integer", "null"]},
                        "leader_address": {"type": ["string", "null"]},
                        "term": {
                            "type": ["integer", "null"],
                            "description": "null: a shard with no replica on this node, "
                            "whose leader the metadata has not seen yet.",
                        },
                        "replicas": {"type": "array", "items": {"type": "integer"}},
                        "removed": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "description": "Node ids removed from the shard: never re-added.",
                        },
                        "commit_index": {"type": ["integer", "null"]},
                    },
                },
            },
        },
    },
    "JoinRequest": {
        "type": "object",
        "required": ["id", "address"],
        "properties": {
            "id": _NODE_ID,
            "address": {"type": "string", "minLength": 1},
            "raft_address": {"type": "string", "minLength": 1},
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    """The error responses an operation can give (every one has the Error body)."""
    base = (400, 500, 503, *statuses)
    return {str(s): {"$ref": "#/components/responses/Error"} for s in sorted(set(base))}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_SHARD_Q = _query(
    "shard",
    "Only this shard's keys. Without it a sharded cluster merges every shard's keys in "
    "order (a prefix inside one hash tag reads its one shard).",
    {"type": "integer", "minimum": 0, "maximum": 4095},
)

_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The key, percent-encoded (encode '/' as %2F when the key ends in "
    "/history, /rollback or /diff).",
    # the limit is in UTF-8 bytes and configurable (413 past it), so no maxLength here
    "schema": {"type": "string", "minLength": 1},
}
_CONSISTENCY = _query(
    "consistency",
    "linearizable (default), lease, follower or stale.",
    {"enum": ["linearizable", "lease", "follower", "stale"], "default": "linearizable"},
)
_LIMIT = _query(
    "limit", "At most this many (0 to 10000).", {"type": "integer", "minimum": 0, "maximum": 10000}
)
_HEADER_STR = {"type": "string"}
_PRECONDITIONS = [
    {
        "name": "If-Match",
        "in": "header",
        "description": 'Write only if "<version>" is the sole current head (else 412).',
        "schema": {"type": "string", "pattern": '^"[0-9a-f]{40}"$'},
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "A retry with the same key returns the first result.",
        "schema": _HEADER_STR,
    },
    {
        "name": "X-Tide-Author",
        "in": "header",
        "description": "Author recorded in the version.",
        "schema": _HEADER_STR,
    },
]
_WRITTEN = {
    "200": {
        **_json(_ref("WriteResult"), "The new version."),
        "headers": {"ETag": {"schema": _HEADER_STR, "description": '"<version>"'}},
    }
}


def _paths() -> dict[str, Any]:
    return {
        "/v1/kv": {
            "get": {
                "operationId": "listKeys",
                "summary": "List keys with their current version and value",
                "parameters": [
                    _query("prefix", "Only keys starting with this."),
                    _query("start", "First key (inclusive)."),
                    _query("end", "End key (exclusive)."),
                    _LIMIT,
                    _query("cursor", "The next value of the previous page."),
                    _SHARD_Q,
                    _CONSISTENCY,
                ],
                "responses": {"200": _json(_ref("Listing"), "A page of keys."), **_errors()},
            }
        },
        "/v1/kv/{key}": {
            "parameters": [_KEY],
            "get": {
                "operationId": "getKey",
                "summary": "The current value as stored, with its content type",
                "parameters": [
                    _CONSISTENCY,
                    _query("version", "Read this version.", _ref("VersionId")),
                    _query("as_of", "A revision number or an RFC 3339 time."),
                ],
                "responses": {
                    "200": {
                        "description": "The value; headers name its version.",
                        "content": {"*/*": {"schema": {}}},
                        "headers": {
                            name: {"schema": _HEADER_STR}
                            for name in (
                                "ETag",
                                "X-Tide-Version",
                                "X-Tide-Revision",
                                "X-Tide-HLC",
                                "X-Tide-Siblings",
                            )
                        },
                    },
                    "300": {"$ref": "#/components/responses/Error"},
                    **_errors(404, 413),
                },
            },
            "put": {
                "operationId": "putKey",
                "summary": "Write a new version",
                "parameters": [
                    *_PRECONDITIONS,
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "description": "'*': write only if the key is absent.",
                        "schema": {"enum": ["*"]},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "description": "The value; application/json must be valid JSON.",
                    "content": {"*/*": {"schema": {}}},
                },
                "responses": {**_WRITTEN, **_errors(412, 413)},
            },
            "delete": {
                "operationId": "deleteKey",
                "summary": "Write a tombstone version (history is kept)",
                "parameters": _PRECONDITIONS,
                "responses": {**_WRITTEN, **_errors(404, 412, 413)},
            },
        },
        "/v1/kv/{key}/history": {
            "parameters": [_KEY],
            "get": {
                "operationId": "history",
                "summary": "The key's versions, newest first",
                "parameters": [
                    _LIMIT,
                    _query("before", "Continue after this version.", _ref("VersionId")),
                    _CONSISTENCY,
                ],
                "responses": {"200": _json(_ref("History"), "Versions."), **_errors(404, 413)},
            },
        },
        "/v1/kv/{key}/rollback": {
            "parameters": [_KEY],
            "post": {
                "operationId": "rollback",
                "summary": "A new version with the content of an older one",
                "parameters": _PRECONDITIONS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["to"],
                                "properties": {"to": _ref("VersionId")},
                            }
                        }
                    },
                },
                "responses": {**_WRITTEN, **_errors(404, 412, 413)},
            },
        },
        "/v1/kv/{key}/diff": {
            "parameters": [_KEY],
            "get": {
                "operationId": "diff",
                "summary": "What changed between two versions",
                "parameters": [
                    {**_query("from", "The older version.", _ref("VersionId")), "required": True},
                    _query("to", "The newer version (default: current).", _ref("VersionId")),
                    _CONSISTENCY,
                ],
                "responses": {"200": _json(_ref("Diff"), "The changes."), **_errors(404, 413)},
            },
        },
        "/v1/watch": {
            "get": {
                "operationId": "watch",
                "summary": "The change feed as server-sent events",
                "description": "Each event: `id: <cursor>` and `data: <ChangeEvent JSON>`; "
                "a comment line every 15 s; `event: error` with an Error body if the "
                "feed fails. Reconnect with since= or Last-Event-ID to resume.",
                "parameters": [
                    _query("prefix", "Only keys starting with this."),
                    _query("since", "Resume after this cursor."),
                    _query(
                        "shard",
                        "Only this shard's changes (the cursor is its revision). Without "
                        "it a sharded cluster merges every shard's feed (w1. cursors), "
                        "unless the prefix lies inside one hash tag (its one shard).",
                        {"type": "integer", "minimum": 0, "maximum": 4095},
                    ),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "Resume after this cursor (wins over since).",
                        "schema": _HEADER_STR,
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream.",
                        "content": {"text/event-stream": {"schema": _ref("ChangeEvent")}},
                    },
                    **_errors(410),
                },
            }
        },
        "/v1/cluster": {
            "get": {
                "operationId": "cluster",
                "summary": "Nodes and shards",
                "responses": {"200": _json(_ref("Cluster"), "The cluster."), **_errors()},
            }
        },
        "/v1/cluster/nodes": {
            "post": {
                "operationId": "addNode",
                "summary": "Join a node",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("JoinRequest")}},
                },
                "responses": {"200": _json({"type": "object"}, "Joined."), **_errors(409)},
            }
        },
        "/v1/cluster/nodes/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": _NODE_ID}],
            "delete": {
                "operationId": "removeNode",
                "summary": "Decommission a node (its replicas move first)",
                "responses": {"200": _json({"type": "object"}, "Removed."), **_errors(404, 409)},
            },
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "200 while the process serves",
                "responses": {"200": _json({"type": "object"}, "Serving.")},
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "summary": "200 when linearizable requests can be served",
                "responses": {"200": _json({"type": "object"}, "Ready."), **_errors()},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text exposition",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    from tidekv import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tidekv HTTP API",
            "version": f"v1 ({__version__})",
            "description": "A distributed, versioned key-value and document store. "
            'Every error is JSON: {"error": {"code", "message", ...}}.',
        },
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "responses": {"Error": _json(_ref("Error"), "An error (see error.code).")},
        },
    }
