"""Dev tenant start-up: from `serve_dev_tenant` being called to the first JWKS answer.

Prints p50/max over N starts in one process (issue 4 asks for start-up under one second).
Usage: .venv/bin/python bench/devtenant_start.py [N]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import httpx
import trio

from aegisd.devtenant import DevTenantOptions
from aegisd.devtenant.server import serve_dev_tenant


async def one() -> float:
    async with trio.open_nursery() as n:
        began = time.perf_counter()
        tenant = await n.start(serve_dev_tenant, DevTenantOptions())
        async with httpx.AsyncClient(base_url=tenant.issuer) as c:
            (await c.get(".well-known/jwks.json")).raise_for_status()
        took = time.perf_counter() - began
        tenant.stop()
    return took


async def main(n: int) -> None:
    samples = [await one() for _ in range(n)]
    result = {
        "bench": "devtenant_start",
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
        "target_ms": 1000,
    }
    print(
        f"dev tenant start to first JWKS answer: p50 {result['p50_ms']} ms, "
        f"max {result['max_ms']} ms over {n} starts (target < 1000 ms)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 10)
