"""Fault injection: an ASGI middleware that makes the tenant slow, flaky or rude on purpose.

Owns how the ``Faults`` switches turn into behaviour on the wire: added latency; 429 bursts
with ``Retry-After`` and ``x-ratelimit-reset`` (epoch seconds, as Auth0 sends it); a share of
5xx answers; answers whose JSON body is cut short (after the request was processed, so state
changed but the client cannot read the answer); connections dropped after the request was
processed (headers sent, body never); and hangs that end in a drop. Faults never touch the
phone or the ``/_dev/`` control endpoints. It must not hold global state: the switches and the
random source live in a ``FaultState`` owned by one tenant.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Final, final

import msgspec
import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegisd.devtenant.options import Faults

__all__ = ["FaultInjector", "FaultState"]

# Endpoints that model Auth0 or the downstream API; everything else is never faulted.
_FAULTABLE: Final = (
    "/bc-authorize",
    "/oauth/token",
    "/.well-known/",
    "/api/v2/",
    "/demo-api/",
    "/userinfo",
)


@final
class FaultState:
    """The switches in force, the random source they draw from, and what was injected."""

    def __init__(self, faults: Faults, *, seed: int | None, injected: Counter[str]) -> None:
        self.faults = faults
        self.rng = random.Random(seed)  # chaos, not cryptography
        self.injected = injected

    def set(self, faults: Faults) -> None:
        self.faults = faults

    def applies(self, path: str) -> bool:
        if not path.startswith(_FAULTABLE):
            return False
        prefixes = self.faults.paths
        return not prefixes or path.startswith(tuple(prefixes))

    def draw(self, share: float) -> bool:
        return share > 0 and self.rng.random() < share

    def take_429(self) -> bool:
        if self.faults.burst_429 <= 0:
            return False
        self.faults = msgspec.structs.replace(self.faults, burst_429=self.faults.burst_429 - 1)
        return True


async def _send_json(
    send: Send, status: int, body: dict[str, object], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


@final
class FaultInjector:
    """ASGI middleware applying a tenant's ``FaultState`` to each HTTP request."""

    def __init__(self, app: ASGIApp, state: FaultState, *, wall: Callable[[], float]) -> None:
        self._app = app
        self._state = state
        self._wall = wall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._state.applies(scope["path"]):
            await self._app(scope, receive, send)
            return
        state = self._state
        faults = state.faults
        if faults.latency_ms:
            scope["aegis.fault"] = "latency"
            state.injected["latency"] += 1
            await trio.sleep(faults.latency_ms / 1000)
        if state.take_429():
            scope["aegis.fault"] = "429"
            state.injected["429"] += 1
            wait = faults.retry_after
            await _send_json(
                send,
                429,
                {
                    "error": "too_many_requests",
                    "error_description": "Global limit has been reached",
                },
                [
                    (b"retry-after", str(wait).encode()),
                    (b"x-ratelimit-limit", b"10"),
                    (b"x-ratelimit-remaining", b"0"),
                    (b"x-ratelimit-reset", str(int(self._wall()) + wait).encode()),
                ],
            )
            return
        if state.draw(faults.share_timeout):
            scope["aegis.fault"] = "timeout"
            state.injected["timeout"] += 1
            await trio.sleep(faults.timeout_seconds)
            # then headers that promise a body which never comes: the connection is dropped
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
                }
            )
            return
        if state.draw(faults.share_5xx):
            scope["aegis.fault"] = "5xx"
            state.injected["5xx"] += 1
            await _send_json(
                send,
                faults.status_5xx,
                {"error": "server_error", "error_description": "Injected server error"},
                [],
            )
            return
        if state.draw(faults.share_drop):
            scope["aegis.fault"] = "drop"
            state.injected["drop"] += 1
            await self._app(scope, receive, _Dropping(send))
            return
        if state.draw(faults.share_malformed_json):
            scope["aegis.fault"] = "malformed_json"
            state.injected["malformed_json"] += 1
            await self._app(scope, receive, _Truncating(send))
            return
        await self._app(scope, receive, send)


class _Dropping:
    """Sends the headers, never the body: the server then closes the connection mid-answer."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._send(message)


class _Truncating:
    """Replaces the answer's body with its first half, labelled as JSON."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._body += message.get("body", b"")
        if message.get("more_body", False):
            return
        cut = bytes(self._body[: len(self._body) // 2]) or b'{"error":'
        headers = [
            (k, v)
            for k, v in self._start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(cut)).encode()),
        ]
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": cut})
