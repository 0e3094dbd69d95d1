"""Local limits, pure: CIBA start rate per approver, pending caps, remembered approvals.

No I/O and no clock reads: every method takes ``now`` (trio's clock in the daemon, a number in
tests). Auth0 allows five CIBA requests a minute per authorizing user (reference
auth0-protocol.md §1 Limits); counting them here answers ``rate_limited`` with a useful
``retry_after`` instead of sending a push Auth0 would refuse.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aegisd.errors import RateLimited

__all__ = ["PendingCaps", "RememberCache", "SlidingWindow"]

T = TypeVar("T")


class SlidingWindow:
    """At most ``limit`` events in any ``period`` seconds."""

    def __init__(self, limit: int, period: float = 60.0) -> None:
        self.limit = limit
        self.period = period
        self._events: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._events and self._events[0] <= now - self.period:
            self._events.popleft()

    def retry_after(self, now: float) -> float:
        """0 if an event may happen now, else seconds until one may."""
        self._trim(now)
        if len(self._events) < self.limit:
            return 0.0
        return max(0.0, self._events[0] + self.period - now)

    def take(self, now: float) -> None:
        """Record one event or raise ``RateLimited`` with ``retry_after``."""
        wait = self.retry_after(now)
        if wait > 0:
            raise RateLimited(
                f"at most {self.limit} approval requests per {self.period:.0f} s; "
                f"retry in {wait:.0f} s",
                retry_after=round(wait, 3),
            )
        self._events.append(now)

    def clear(self) -> None:
        self._events.clear()


@dataclass
class PendingCaps:
    """Caps on approvals waiting at once: overall and per caller rule."""

    total_cap: int
    per_caller_cap: int
    _by_caller: dict[str, int] = field(default_factory=dict)
    _total: int = 0

    def acquire(self, caller: str) -> None:
        if self._total >= self.total_cap:
            raise RateLimited(
                f"too many approvals pending ({self.total_cap}); wait for some to finish",
                retry_after=5.0,
            )
        if self._by_caller.get(caller, 0) >= self.per_caller_cap:
            raise RateLimited(
                f"caller {caller!r} has {self.per_caller_cap} approvals pending already",
                retry_after=5.0,
            )
        self._by_caller[caller] = self._by_caller.get(caller, 0) + 1
        self._total += 1

    def release(self, caller: str) -> None:
        n = self._by_caller.get(caller, 0)
        if n <= 1:
            self._by_caller.pop(caller, None)
        else:
            self._by_caller[caller] = n - 1
        self._total = max(0, self._total - 1)

    @property
    def total(self) -> int:
        return self._total


class RememberCache(Generic[T]):
    """Opt-in approval reuse: key -> (value, expiry on the monotonic clock)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, ...], tuple[T, float]] = {}

    def get(self, key: tuple[str, ...], now: float) -> T | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, until = item
        if now >= until:
            del self._items[key]
            return None
        return value

    def put(self, key: tuple[str, ...], value: T, until: float) -> None:
        self._items[key] = (value, until)

    def forget_action(self, action: str) -> int:
        gone = [k for k in self._items if len(k) > 1 and k[1] == action]
        for k in gone:
            del self._items[k]
        return len(gone)

    def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        return n

    def __len__(self) -> int:
        return len(self._items)
