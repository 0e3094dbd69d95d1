"""One fetch at a time for a cached value, with the outcome shared by everyone who waited.

Owns the concurrency rule for aegisd's lazily fetched Auth0 values (discovery, the JWKS, the
Management API token): when many callers need the value at once, exactly one fetches it; the
others wait and then use the cached result. If that fetch fails, the callers that were
already waiting get the same error instead of each trying again in turn: with Auth0 down, a
queue of callers would otherwise spend ``callers * (timeout + retries)`` in line. A caller
that arrives after the failure tries again. No I/O and no clock of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import trio

from aegisd.errors import AegisError

__all__ = ["SingleFlight"]

T = TypeVar("T")


@final
class SingleFlight(Generic[T]):
    """Serialises fetches of one value and shares a failure with the callers that waited."""

    def __init__(self) -> None:
        self._lock = trio.Lock()
        self._failure: AegisError | None = None
        self._failures = 0  # counts failed fetches, so a waiter can tell one happened

    async def run(self, cached: Callable[[], T | None], fetch: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or the result of one fetch.

        Args:
            cached: returns the usable cached value, or ``None`` when a fetch is needed.
            fetch: fetches (and caches) the value; raises an ``AegisError`` on failure.

        Raises:
            AegisError: the fetch failed (for this caller, or while it waited in line).
        """
        value = cached()
        if value is not None:
            return value
        failures_before = self._failures
        async with self._lock:
            value = cached()
            if value is not None:
                return value
            failure = self._failure
            if failure is not None and self._failures != failures_before:
                shared = type(failure)(failure.message)
                shared.retry_after = failure.retry_after
                raise shared
            try:
                value = await fetch()
            except AegisError as exc:
                self._failure = exc
                self._failures += 1
                raise
            self._failure = None
            return value
