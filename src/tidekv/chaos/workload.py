"""Concurrent register clients over real HTTP, recording every operation.

``clients`` asyncio tasks each loop: pick a key from a small set, an operation (read,
write or compare-and-set) and a node, send one request (no retries: a retry would hide
the outcome), and record a :class:`~tidekv.chaos.history.ClientOp` with its invoke and
complete times. Every written value is a fresh integer, so a value names the write that
made it, and a compare-and-set on value ``v`` is ``If-Match`` on the version id that
wrote ``v`` (learnt from the write's answer or a read's ETag); on "absent" it is
``If-None-Match: *``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from tidekv.chaos.history import OK, ClientOp, classify_error, classify_response

__all__ = ["Workload", "WorkloadOptions"]


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    keys: int = 6
    clients: int = 6
    read_share: float = 0.5
    cas_share: float = 0.2  # the rest are blind writes
    timeout: float = 2.0
    think: float = 0.02  # mean pause between one client's operations (s)
    consistency: str = "linearizable"  # "stale" weakens reads on purpose


@dataclass
class Workload:
    urls: Sequence[str]
    opts: WorkloadOptions
    seed: int
    t0: float
    ops: list[ClientOp] = field(default_factory=list)
    versions: dict[tuple[str, int], str] = field(default_factory=dict)
    _values: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def key_names(self) -> list[str]:
        return [f"r{k}" for k in range(self.opts.keys)]

    async def run(self, until: Callable[[], bool]) -> None:
        await asyncio.gather(*(self._client(c, until) for c in range(self.opts.clients)))

    async def _client(self, c: int, until: Callable[[], bool]) -> None:
        rng = random.Random(self.seed * 1000 + c)
        known: dict[str, int | None] = {}
        limits = httpx.Limits(
            max_connections=len(self.urls), max_keepalive_connections=len(self.urls)
        )
        async with httpx.AsyncClient(timeout=self.opts.timeout, limits=limits) as http:
            while not until():
                key = rng.choice(self.key_names)
                node = rng.randrange(len(self.urls)) + 1
                r = rng.random()
                if r < self.opts.read_share:
                    op = await self._read(http, c, node, key)
                elif r < self.opts.read_share + self.opts.cas_share and key in known:
                    op = await self._cas(http, c, node, key, known[key])
                else:
                    op = await self._write(http, c, node, key)
                self.ops.append(op)
                if op.outcome == OK and op.swapped is not False:
                    known[key] = op.value
                elif op.kind != "read":
                    known.pop(key, None)  # do not cas on a value we are unsure of
                await asyncio.sleep(rng.expovariate(1.0 / self.opts.think))

    async def read_once(self, http: httpx.AsyncClient, c: int, node: int, key: str) -> ClientOp:
        return await self._read(http, c, node, key)

    async def _read(self, http: httpx.AsyncClient, c: int, node: int, key: str) -> ClientOp:
        url = f"{self.urls[node - 1]}/v1/kv/{key}"
        t = self.now()
        try:
            resp = await http.get(url, params={"consistency": self.opts.consistency})
        except httpx.HTTPError as exc:
            return ClientOp(
                c,
                node,
                "read",
                key,
                t,
                self.now(),
                classify_error("read", type(exc).__name__),
                error=type(exc).__name__,
            )
        done = self.now()
        code = _code(resp)
        outcome, _ = classify_response("read", resp.status_code, code)
        value: int | None = None
        version = None
        if resp.status_code == 200:
            value = int(resp.content)
            version = resp.headers.get("x-tide-version")
            if version:
                self.versions[(key, value)] = version
        err = "" if outcome == OK else f"{resp.status_code} {code}"
        return ClientOp(
            c, node, "read", key, t, done, outcome, value=value, version=version, error=err
        )

    async def _write(self, http: httpx.AsyncClient, c: int, node: int, key: str) -> ClientOp:
        value = next(self._values)
        return await self._put(http, c, node, key, "write", value, None, {})

    async def _cas(
        self, http: httpx.AsyncClient, c: int, node: int, key: str, expected: int | None
    ) -> ClientOp:
        value = next(self._values)
        if expected is None:
            headers = {"if-none-match": "*"}
        else:
            vid = self.versions.get((key, expected))
            if vid is None:
                return await self._put(http, c, node, key, "write", value, None, {})
            headers = {"if-match": f'"{vid}"'}
        return await self._put(http, c, node, key, "cas", value, expected, headers)

    async def _put(
        self,
        http: httpx.AsyncClient,
        c: int,
        node: int,
        key: str,
        kind: str,
        value: int,
        expected: int | None,
        headers: dict[str, str],
    ) -> ClientOp:
        url = f"{self.urls[node - 1]}/v1/kv/{key}"
        t = self.now()
        try:
            resp = await http.put(
                url,
                content=str(value).encode(),
                headers={"content-type": "application/octet-stream", **headers},
            )
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            return ClientOp(
                c,
                node,
                kind,
                key,
                t,
                self.now(),
                classify_error(kind, name),
                value=value,
                expected=expected,
                error=name,
            )
        done = self.now()
        code = _code(resp)
        outcome, swapped = classify_response(kind, resp.status_code, code)
        version = None
        if resp.status_code == 200:
            version = str(resp.json()["version"])
            self.versions[(key, value)] = version
        err = "" if resp.status_code == 200 else f"{resp.status_code} {code}"
        return ClientOp(
            c,
            node,
            kind,
            key,
            t,
            done,
            outcome,
            value=value,
            expected=expected,
            swapped=swapped,
            version=version,
            error=err,
        )


def _code(resp: httpx.Response) -> str:
    if resp.status_code == 200:
        return ""
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
