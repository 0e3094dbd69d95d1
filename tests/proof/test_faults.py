"""Auth0 misbehaving: 5xx, timeouts, 429 bursts, malformed JSON, network loss, key rotation.

The dev tenant and the daemon run in this trio run over real HTTP and a real socket
(``tests.broker.conftest.make_stack``); the tenant's fault switches make it misbehave. What a
person would notice, and what each test asserts:

* every request ends, in success or in a typed error with a DESIGN §2 code (never
  ``internal``, never a hang: each test runs under ``fail_after``);
* the person never gets two pushes for one request: at most one CIBA request reaches the
  tenant per client request (each request has its own binding message, so the tenant's
  CIBA book is counted per binding message);
* no retry storm: the tenant sees at most ``REQUESTS_PER_CALL`` HTTP requests per client
  request plus ``SHARED_BUDGET`` for discovery and JWKS, and at most one poll per second per
  ``auth_req_id`` (the daemon's minimum interval) over the request's lifetime;
* afterwards nothing is left pending, the daemon still answers, and the audit chain verifies.

Bound, stated: per client request at most 1 ``/bc-authorize`` + ``EXPIRY`` polls (1 s
minimum interval) + 3 Token Vault attempts + 3 Management token attempts + 3 Management
user reads + 1 proxied request + rate-limit waits (3 per call) = well under 40; discovery and
JWKS are shared (3 attempts each per fetch, refetched after failures).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import trio

from aegisd.client import AegisClient, AegisError, Credentials, ProxyResult
from aegisd.daemon.audit import verify_files
from aegisd.devtenant import DevTenantOptions
from bench.tenantproc import edit_toml
from tests.broker.conftest import Stack

from .kit import BENCH_ACTION, DESIGN_CODES, LIFTED_CAPS

EXPIRY = 12  # requested_expiry, seconds
HTTP_TIMEOUT = 1.0  # [auth0] http_timeout; the tenant's hangs last longer
N_TOKEN = 8  # demo.bench requests (CIBA token delivered)
N_PROXY = 8  # demo.delete requests (CIBA, Token Vault, proxied DELETE)
REQUESTS_PER_CALL = 40
SHARED_BUDGET = 40
BURST_EVERY = 3.0  # seconds between 429 bursts (each answers the next few requests 429)

SCENARIOS: dict[str, dict[str, Any]] = {
    "5xx-30pct": {"share_5xx": 0.3},
    "timeouts-10pct": {"share_timeout": 0.1, "timeout_seconds": 2.5},
    "429-bursts": {"burst_429": 3, "retry_after": 1},
    "malformed-json-15pct": {"share_malformed_json": 0.15},
    "all-at-once": {
        "share_5xx": 0.3,
        "share_timeout": 0.1,
        "timeout_seconds": 2.5,
        "burst_429": 2,
        "retry_after": 1,
        "share_malformed_json": 0.1,
    },
}


def _edit(text: str) -> str:
    text = edit_toml(
        text,
        {
            "daemon": LIFTED_CAPS,
            "auth0": {"http_timeout": HTTP_TIMEOUT, "requested_expiry": EXPIRY},
        },
    )
    return text + BENCH_ACTION


async def _stack(make_stack: Callable[..., Any], **options: Any) -> Stack:
    opts = DevTenantOptions(interval=1.0, ciba_per_user_per_minute=None, **options)
    stack: Stack = await make_stack(opts, edit=_edit)
    return stack


def _pushes_per_message(stack: Stack) -> Counter[str]:
    # The tenant's CIBA book: one entry per /bc-authorize that started a request (a push).
    book = stack.tenant._tenant.ciba
    return Counter(book.get(rid).binding_message for rid in book.all_ids())  # type: ignore[union-attr]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_every_request_ends_typed_without_storm_or_duplicate_push(
    make_stack: Callable[..., Any], scenario: str
) -> None:
    faults = SCENARIOS[scenario]
    n = N_TOKEN + N_PROXY
    with trio.fail_after(EXPIRY + 40):
        stack = await _stack(make_stack, auto_approve_ms=1500, seed=sum(map(ord, scenario)))
        # Mid-run, as in life: one approval first, so discovery and JWKS are cached.
        async with AegisClient(stack.socket) as client:
            await client.authorize("demo.bench", n="999999")
        requests_before = stack.tenant.stats.requests
        bc_before = stack.tenant.stats.bc_authorize
        stack.tenant.set_faults(**faults)
        outcomes: dict[int, str] = {}

        async def one(client: AegisClient, i: int) -> None:
            try:
                if i < N_TOKEN:
                    result: object = await client.authorize("demo.bench", n=str(i))
                    assert isinstance(result, Credentials)
                else:
                    result = await client.proxy("demo.delete", repo=f"fault-{i}")
                    assert isinstance(result, ProxyResult)
                outcomes[i] = "ok"
            except AegisError as exc:
                outcomes[i] = exc.code

        async def rearm_bursts() -> None:
            while True:  # a burst of 429s every few seconds, not just one at the start
                await trio.sleep(BURST_EVERY)
                stack.tenant.set_faults(**faults)

        async with AegisClient(stack.socket) as client, trio.open_nursery() as nursery:
            if "burst_429" in faults:
                nursery.start_soon(rearm_bursts)
            async with trio.open_nursery() as calls:
                for i in range(n):
                    calls.start_soon(one, client, i)
            nursery.cancel_scope.cancel()
        stack.tenant.set_faults()  # all off: the daemon must still serve
        async with AegisClient(stack.socket) as client:
            status = await client.status()

    stats = stack.tenant.stats
    summary = (
        f"{scenario}: outcomes {dict(Counter(outcomes.values()))}, injected "
        f"{dict(stats.faults)}, tenant requests {stats.requests - requests_before}"
    )
    print(summary)
    assert len(outcomes) == n, summary
    codes = {c for c in outcomes.values() if c != "ok"}
    assert codes <= DESIGN_CODES, summary
    assert "internal" not in codes, summary
    assert "ok" in outcomes.values(), f"nothing succeeded under faults: {summary}"
    assert sum(stats.faults.values()) > 0, f"no fault was injected: {summary}"
    # one push per request at most
    pushes = _pushes_per_message(stack)
    assert pushes and max(pushes.values()) == 1, f"duplicate push {pushes.most_common(2)}"
    assert stats.bc_authorize - bc_before <= n, summary
    # no retry storm
    assert max(stats.polls.values(), default=0) <= math.ceil(EXPIRY / 1.0) + 1, stats.polls
    budget = n * REQUESTS_PER_CALL + SHARED_BUDGET
    seen = stats.requests - requests_before
    assert seen <= budget, f"{seen} tenant requests > {budget}: {summary}"
    # nothing left behind
    assert status.pending == 0
    assert verify_files(stack.config.audit_path()).ok


async def test_network_loss_mid_poll_then_restore(make_stack: Callable[..., Any]) -> None:
    """Answers dropped, then requests hanging, while an approval is pending; then the network
    comes back, the person approves, and the caller gets the credential."""
    with trio.fail_after(EXPIRY + 30):
        stack = await _stack(make_stack)
        async with AegisClient(stack.socket) as client, trio.open_nursery() as nursery:
            result: list[object] = []

            async def ask() -> None:
                try:
                    result.append(await client.authorize("demo.token"))
                except AegisError as exc:
                    result.append(exc)

            nursery.start_soon(ask)
            while not stack.tenant.pending():
                await trio.sleep(0.05)
            (pending,) = stack.tenant.pending()
            polls_before = stack.tenant.stats.polls[pending.id]
            # 1) connections dropped after the request was read (headers, never a body)
            stack.tenant.set_faults(share_drop=1.0, paths=["/oauth/token"])
            await trio.sleep(3.2)
            dropped = stack.tenant.stats.faults["drop"]
            # 2) requests that hang past the daemon's http_timeout
            stack.tenant.set_faults(share_timeout=1.0, timeout_seconds=3.0, paths=["/oauth/token"])
            await trio.sleep(3.2)
            hung = stack.tenant.stats.faults["timeout"]
            stack.tenant.set_faults()
            polls_during = stack.tenant.stats.polls[pending.id] - polls_before
            stack.tenant.approve(pending.id)
        assert len(result) == 1
        assert isinstance(result[0], Credentials), result[0]
    assert dropped >= 2 and hung >= 1, (dropped, hung)
    assert polls_during >= 2  # the daemon kept polling through the outage, at its interval
    assert stack.tenant.stats.polls[pending.id] <= EXPIRY + 1
    events = stack.audit_events()
    assert events.count("approved") == 1 and "delivered" in events


async def test_jwks_rotation_mid_run_still_verifies(make_stack: Callable[..., Any]) -> None:
    """The key that signs ID tokens changes between the push and the approval, with the old
    key dropped from the JWKS at once: the daemon refetches the JWKS and verifies."""
    with trio.fail_after(30):
        stack = await _stack(make_stack, keep_old_key_seconds=0.0)
        async with AegisClient(stack.socket) as client:
            # a first approval caches the JWKS with the old key
            async with trio.open_nursery() as nursery:
                first: list[object] = []

                async def ask(n: str) -> None:
                    first.append(await client.authorize("demo.bench", n=n))

                nursery.start_soon(ask, "1")
                while not stack.tenant.pending():
                    await trio.sleep(0.05)
                stack.tenant.approve(stack.tenant.pending()[0].id)
            jwks_before = stack.tenant.stats.jwks
            second: list[object] = []
            async with trio.open_nursery() as nursery:

                async def ask2() -> None:
                    second.append(await client.authorize("demo.bench", n="2"))

                nursery.start_soon(ask2)
                while not stack.tenant.pending():
                    await trio.sleep(0.05)
                stack.tenant.rotate_keys(keep_old=False)
                stack.tenant.approve(stack.tenant.pending()[0].id)
    assert isinstance(first[0], Credentials) and isinstance(second[0], Credentials)
    assert stack.tenant.stats.jwks > jwks_before  # fetched again for the new kid
    assert [r["event"] for r in stack.audit_records("approved")] == ["approved", "approved"]
