"""Fault switches, set by options, by the handle and by POST /_dev/faults."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
import trio

from aegisd.devtenant import Faults, open_dev_tenant

from .helpers import fast, start

DISCOVERY = ".well-known/openid-configuration"


async def test_faults_from_options_hit_auth0_endpoints_but_never_the_phone_or_control() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(faults=Faults(share_5xx=1.0))) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            broken = await c.get(DISCOVERY)
            phone = await c.get("phone/pending")
            control = await c.post("_dev/faults", json={})
            healed = await c.get(DISCOVERY)
            counted = t.stats.faults["5xx"]
    assert broken.status_code == 503 and broken.json()["error"] == "server_error"
    assert phone.status_code == 200 and control.status_code == 200
    assert healed.status_code == 200
    assert counted == 1


async def test_429_burst_counts_down_with_retry_after_and_reset() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await c.post("_dev/faults", json={"burst_429": 2, "retry_after": 7})
            answers = [await c.get(DISCOVERY) for _ in range(3)]
    assert resp.json()["burst_429"] == 2
    assert [a.status_code for a in answers] == [429, 429, 200]
    limited = answers[0]
    assert limited.json()["error"] == "too_many_requests"
    assert limited.headers["retry-after"] == "7"
    assert abs(int(limited.headers["x-ratelimit-reset"]) - (time.time() + 7)) < 3


async def test_latency_delays_answers() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            t.set_faults(latency_ms=300)
            began = trio.current_time()
            await c.get(DISCOVERY)
            slow = trio.current_time() - began
    assert slow >= 0.3


async def test_malformed_json_is_a_truncated_body_after_processing() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            t.set_faults(share_malformed_json=1.0, paths=["/bc-authorize"])
            resp = await start(c, t)
            processed = len(t.pending())
    assert resp.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        resp.json()
    assert processed == 1  # the request started; only the answer was lost


async def test_dropped_connection_after_processing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aegisd.devtenant")
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            t.set_faults(share_drop=1.0)
            with pytest.raises(httpx.RemoteProtocolError):
                await start(c, t)
            processed = len(t.pending())
            t.set_faults()
            ok = await c.get(DISCOVERY)
    assert processed == 1
    assert ok.status_code == 200
    assert any(
        r.getMessage().startswith("POST /bc-authorize 200 ") and "fault=drop" in r.getMessage()
        for r in caplog.records
    )


async def test_timeouts_hang_until_the_client_gives_up() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            t.set_faults(share_timeout=1.0, timeout_seconds=5)
            with pytest.raises(httpx.ReadTimeout):
                await c.get(DISCOVERY, timeout=0.3)
            counted = t.stats.faults["timeout"]
    assert counted == 1


async def test_invalid_faults_are_refused() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            out_of_range = await c.post("_dev/faults", json={"share_5xx": 2})
            unknown = await c.post("_dev/faults", json={"explode": True})
            current = (await c.get("_dev/faults")).json()
            with pytest.raises(ValueError):
                t.set_faults(share_drop=-1.0)
    assert out_of_range.status_code == 400 and unknown.status_code == 400
    assert current["share_5xx"] == 0.0


async def test_shares_are_drawn_from_the_seeded_random_source() -> None:
    async def outcomes() -> list[int]:
        async with (
            open_dev_tenant(fast(seed=7, faults=Faults(share_5xx=0.5))) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            return [(await c.get(DISCOVERY)).status_code for _ in range(20)]

    with trio.fail_after(10):
        first, second = await outcomes(), await outcomes()
    assert first == second
    assert {200, 503} == set(first)
