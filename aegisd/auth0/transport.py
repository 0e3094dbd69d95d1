"""The Auth0 client's transport: httpx's, with a cap on requests in flight.

Owns the one concurrency limit on the daemon's Auth0 traffic. It must not retry, time out or
interpret answers (``auth0/http.py`` does); it only makes extra requests wait their turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final

import httpx
import trio

__all__ = ["AUTH0_MAX_IN_FLIGHT", "BoundedTransport", "bounded_transport"]

# At most this many Auth0 requests in flight (response bodies included); more wait, in FIFO
# order, in a trio semaphore. Without it, 1,000 pending approvals against a slow Auth0 put
# ~100 connections and hundreds of queued requests in httpcore's pool, whose bookkeeping is
# O(queued x connections) and O(connections^2) per change: the daemon then spent >90 % of a
# core there and every poll timed out (bench/pending.py --auth0-latency-ms 300, issue 9).
# 64 in flight serve 200 polls/s (1,000 approvals at a 5 s interval) up to ~300 ms latency.
AUTH0_MAX_IN_FLIGHT: Final = 64


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that frees its ``BoundedTransport`` slot once closed."""

    def __init__(self, inner: httpx.AsyncByteStream, slot: trio.Semaphore) -> None:
        self._inner = inner
        self._slot: trio.Semaphore | None = slot

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            slot, self._slot = self._slot, None
            if slot is not None:
                slot.release()


class BoundedTransport(httpx.AsyncBaseTransport):
    """httpx's transport with at most ``limit`` requests in flight (see AUTH0_MAX_IN_FLIGHT).

    The slot is held until the response body is closed, which every caller does
    (``Auth0Http._exchange`` closes it in ``finally``), so the pool never holds more
    connections than slots and never queues.
    """

    def __init__(self, limit: int) -> None:
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        self._inner = httpx.AsyncHTTPTransport(limits=limits)
        self._slots = trio.Semaphore(limit)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._slots.acquire()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._slots.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ReleasingStream(response.stream, self._slots),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def bounded_transport(limit: int) -> Callable[[], httpx.AsyncBaseTransport]:
    """A factory, so the daemon builds the transport only when it owns the client."""
    return lambda: BoundedTransport(limit)
