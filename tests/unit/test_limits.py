"""Local limits with an explicit clock: CIBA start rate, pending caps, remembered approvals."""

from __future__ import annotations

import pytest

from aegisd.daemon.limits import PendingCaps, RememberCache, SlidingWindow
from aegisd.errors import RateLimited

# ---- SlidingWindow (Auth0 allows 5 CIBA requests a minute per user) ----------------------------


def test_window_allows_up_to_the_limit_then_says_when_to_retry() -> None:
    w = SlidingWindow(5, 60.0)
    for t in (0.0, 1.0, 2.0, 3.0, 4.0):
        w.take(t)
    with pytest.raises(RateLimited) as info:
        w.take(10.0)
    assert info.value.code == "rate_limited"
    assert info.value.retry_after == pytest.approx(50.0)  # the first event leaves at t=60
    assert "retry in 50 s" in info.value.message


def test_window_frees_a_slot_when_the_oldest_event_ages_out() -> None:
    w = SlidingWindow(2, 60.0)
    w.take(0.0)
    w.take(30.0)
    assert w.retry_after(59.9) == pytest.approx(0.1)
    assert w.retry_after(60.0) == 0.0
    w.take(60.0)
    with pytest.raises(RateLimited) as info:
        w.take(61.0)
    assert info.value.retry_after == pytest.approx(29.0)


def test_refused_attempts_do_not_count() -> None:
    w = SlidingWindow(1, 60.0)
    w.take(0.0)
    for t in range(1, 50):
        with pytest.raises(RateLimited):
            w.take(float(t))
    w.take(60.0)  # hammering did not extend the wait


def test_window_clear_forgets_everything() -> None:
    w = SlidingWindow(1, 60.0)
    w.take(0.0)
    w.clear()
    w.take(1.0)


# ---- PendingCaps ------------------------------------------------------------------------------


def test_per_caller_cap_leaves_room_for_other_callers() -> None:
    caps = PendingCaps(total_cap=10, per_caller_cap=2)
    caps.acquire("a")
    caps.acquire("a")
    with pytest.raises(RateLimited) as info:
        caps.acquire("a")
    assert "'a'" in info.value.message and info.value.retry_after == 5.0
    caps.acquire("b")
    assert caps.total == 3


def test_total_cap_applies_across_callers() -> None:
    caps = PendingCaps(total_cap=3, per_caller_cap=10)
    for name in ("a", "b", "c"):
        caps.acquire(name)
    with pytest.raises(RateLimited) as info:
        caps.acquire("d")
    assert "too many approvals pending (3)" in info.value.message


def test_release_makes_room_again() -> None:
    caps = PendingCaps(total_cap=1, per_caller_cap=1)
    caps.acquire("a")
    caps.release("a")
    assert caps.total == 0
    caps.acquire("a")
    assert caps.total == 1


def test_refused_acquire_takes_nothing() -> None:
    caps = PendingCaps(total_cap=5, per_caller_cap=1)
    caps.acquire("a")
    with pytest.raises(RateLimited):
        caps.acquire("a")
    assert caps.total == 1
    caps.release("a")
    assert caps.total == 0


# ---- RememberCache ----------------------------------------------------------------------------


def test_remembered_value_lives_until_its_expiry() -> None:
    cache: RememberCache[str] = RememberCache()
    key = ("request", "github.delete_repo", "digest")
    cache.put(key, "approval", until=100.0)
    assert cache.get(key, 99.9) == "approval"
    assert cache.get(key, 100.0) is None
    assert len(cache) == 0  # expired entries are dropped, not kept around


def test_forget_action_drops_only_that_action() -> None:
    cache: RememberCache[str] = RememberCache()
    cache.put(("request", "a.x", "d1"), "1", 100.0)
    cache.put(("action", "a.x", "claude"), "2", 100.0)
    cache.put(("request", "a.y", "d2"), "3", 100.0)
    assert cache.forget_action("a.x") == 2
    assert cache.get(("request", "a.y", "d2"), 0.0) == "3"
    assert cache.get(("request", "a.x", "d1"), 0.0) is None


def test_clear_reports_how_many_were_forgotten() -> None:
    cache: RememberCache[int] = RememberCache()
    cache.put(("k", "a"), 1, 10.0)
    cache.put(("k", "b"), 2, 10.0)
    assert cache.clear() == 2
    assert cache.get(("k", "a"), 0.0) is None
