"""Serving at once after start, and 1,000 pending requests polled at the interval."""

from __future__ import annotations

from collections import Counter

import httpx
import trio

from aegisd.devtenant import DevTenant, DevTenantOptions, open_dev_tenant, serve_dev_tenant

from .helpers import poll, start

N = 1000
INTERVAL = 1.0


async def test_serves_as_soon_as_start_returns(nursery: trio.Nursery) -> None:
    # start-up time itself is measured by bench/devtenant_start.py, not asserted here
    with trio.fail_after(10):
        tenant: DevTenant = await nursery.start(serve_dev_tenant, DevTenantOptions())
        async with httpx.AsyncClient(base_url=tenant.issuer) as c:
            assert (await c.get(".well-known/jwks.json")).status_code == 200
        tenant.stop()


async def test_survives_a_thousand_pending_requests_polled_at_the_interval() -> None:
    opts = DevTenantOptions(interval=INTERVAL, ciba_per_user_per_minute=None)
    limits = httpx.Limits(max_connections=16)
    with trio.fail_after(90):
        async with (
            open_dev_tenant(opts) as t,
            httpx.AsyncClient(base_url=t.issuer, limits=limits) as c,
        ):
            ids: list[str] = []
            gate = trio.Semaphore(16)

            async def one_start() -> None:
                async with gate:
                    resp = await start(c, t)
                    ids.append(resp.json()["auth_req_id"])

            async with trio.open_nursery() as n:
                for _ in range(N):
                    n.start_soon(one_start)
            assert len(set(ids)) == N and len(t.pending()) == N

            errors: Counter[str] = Counter()
            last: dict[str, float] = {}

            async def one_poll(rid: str) -> None:
                # a well-behaved client: each request waits its own interval since its last poll
                await trio.sleep_until(last.get(rid, 0.0) + INTERVAL)
                async with gate:
                    errors[(await poll(c, t, rid)).json()["error"]] += 1
                    last[rid] = trio.current_time()  # the tenant saw the poll before this

            for _round in range(2):
                async with trio.open_nursery() as n:
                    for rid in ids:
                        n.start_soon(one_poll, rid)
            pending_after = len(t.pending())
            page = await c.get("/")
    assert errors == Counter({"authorization_pending": 2 * N})
    assert t.stats.total_polls == 2 * N and t.stats.slow_downs == 0
    assert pending_after == N
    assert page.status_code == 200 and page.text.count('class="card"') == N
