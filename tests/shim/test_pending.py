"""Approvals that outlast ``--max-wait``, with the official Python SDK client in both eras.

Handshake era (2025-11-25): the call returns ``approval_pending`` and the model calls again
with the same arguments. 2026-07-28: the call returns ``input_required`` (state only) and the
SDK client re-sends it by itself, so the model sees only the final answer. Either way the
repeat re-attaches to the same push (the dev tenant counts them), and a different call never
joins someone else's approval.
"""

from __future__ import annotations

import httpx
import trio
from mcp import Client, ClientSession, stdio_client

from tests.sdk.devstack import DevStack, dev_stack

from .conftest import shim_params
from .test_shim_stdio import error_code, text_of

TIMEOUT = 40


async def pushes(stack: DevStack) -> int:
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        count: int = (await http.get("_dev/stats")).json()["bc_authorize_ok"]
    return count


async def test_pending_then_repeat_in_the_handshake_era() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack(interval=0.1) as stack:
            params = shim_params(stack.aegisd.socket, "--max-wait", "1")
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    first = await session.call_tool("demo_delete", {"repo": "scratch"})
                    other = await session.call_tool("demo_delete", {"repo": "aegis-demo"})
                    assert await pushes(stack) == 2  # other arguments: its own push
                    await stack.answer("Delete repo scratch")
                    await stack.answer("Delete repo aegis-demo", approve=False)
                    again = await session.call_tool("demo_delete", {"repo": "scratch"})
                    denied = await session.call_tool("demo_delete", {"repo": "aegis-demo"})
                    count = await pushes(stack)
                    # the outcome was collected: the same call now is a new request
                    fresh = await session.call_tool("demo_delete", {"repo": "scratch"})
            events = [e["event"] for e in stack.aegisd.audit_events()]
    assert error_code(first) == "approval_pending" and error_code(other) == "approval_pending"
    assert "Delete repo scratch #" in text_of(first) and "valid for" in text_of(first)
    assert first.structured_content is not None
    assert first.structured_content["error"]["expires_at"] > 0
    assert not again.is_error and again.structured_content is not None
    assert again.structured_content["body"] == {"deleted": "scratch", "by": "auth0|aegis-demo"}
    assert error_code(denied) == "approval_denied"
    assert count == 2  # the repeats re-attached: no further push
    assert events.count("reattached") == 2
    assert error_code(fresh) == "approval_pending"


async def test_input_required_rounds_in_the_2026_era() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack(interval=0.1) as stack:
            params = shim_params(stack.aegisd.socket, "--max-wait", "1")
            async with Client(params, mode="auto") as client:
                assert client.protocol_version == "2026-07-28"
                async with trio.open_nursery() as nursery:

                    async def approve_late() -> None:
                        await trio.sleep(2.5)  # past two --max-wait rounds
                        await stack.answer("Delete repo scratch")

                    nursery.start_soon(approve_late)
                    result = await client.call_tool("demo_delete", {"repo": "scratch"})
            count = await pushes(stack)
            events = [e["event"] for e in stack.aegisd.audit_events()]
    assert not result.is_error, result
    assert result.structured_content is not None
    assert result.structured_content["body"]["deleted"] == "scratch"
    assert count == 1
    assert events.count("reattached") >= 2
