"""aegis-mcp end to end: MCP client → shim → aegisd → dev tenant (CIBA, Token Vault) → demo API.

The dev tenant runs in this trio run (``dev_stack``), so the test can answer on the "phone"
and list every secret the tenant ever issued for the leak scan.
"""

from __future__ import annotations

from typing import Literal

import trio
from mcp import Client, ClientSession, stdio_client

from aegisd.client import AegisClient
from tests.sdk.devstack import dev_stack

from .conftest import SHIM, shim_env, shim_params
from .rawmcp import raw_shim
from .test_shim_stdio import _proc_text, error_code, text_of

TIMEOUT = 40


async def test_approval_through_the_phone_in_both_eras() -> None:
    reports: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with dev_stack() as stack:

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                reports.append(message or "")
                if message and "Delete repo scratch" in message:
                    await stack.answer("Delete repo scratch")
                elif message and "Delete repo aegis-demo" in message:
                    await stack.answer("Delete repo aegis-demo", approve=False)

            results = {}
            modes: tuple[Literal["legacy", "auto"], ...] = ("legacy", "auto")
            for mode in modes:
                async with Client(shim_params(stack.aegisd.socket), mode=mode) as client:
                    listed = {t.name: t for t in (await client.list_tools()).tools}
                    assert set(listed) == {"demo_read", "demo_delete"}  # demo.token: SDK only
                    assert listed["demo_delete"].title == "Delete a demo repository"
                    hints = listed["demo_read"].annotations
                    assert hints is not None and hints.read_only_hint is True
                    read = await client.call_tool("demo_read", {})
                    repo = "scratch" if mode == "legacy" else "aegis-demo"
                    results[mode] = (
                        read,
                        await client.call_tool(
                            "demo_delete", {"repo": repo}, progress_callback=on_progress
                        ),
                    )
    read, approved = results["legacy"]
    assert read.structured_content is not None and read.structured_content["status"] == 200
    assert {r["name"] for r in read.structured_content["body"]} >= {"scratch", "aegis-demo"}
    assert approved.structured_content is not None
    assert approved.structured_content["body"] == {"deleted": "scratch", "by": "auth0|aegis-demo"}
    assert reports[0].startswith("Approve on your phone: Delete repo scratch #")
    _, denied = results["auto"]
    assert error_code(denied) == "approval_denied"


async def test_expiry_maps_to_approval_expired() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack(requested_expiry=1) as stack:
            async with stdio_client(shim_params(stack.aegisd.socket)) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    result = await session.call_tool("demo_delete", {"repo": "scratch"})
    assert error_code(result) == "approval_expired"
    assert "expired" in text_of(result)


async def test_cancellation_withdraws_on_the_daemon() -> None:
    pending = trio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        pending.set()

    with trio.fail_after(TIMEOUT):
        async with dev_stack() as stack:
            async with stdio_client(shim_params(stack.aegisd.socket)) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    async with trio.open_nursery() as nursery:

                        async def call() -> None:
                            await session.call_tool(
                                "demo_delete", {"repo": "scratch"}, progress_callback=on_progress
                            )

                        nursery.start_soon(call)
                        await pending.wait()
                        nursery.cancel_scope.cancel()
                    async with AegisClient(stack.aegisd.socket) as c:
                        while await c.pending():
                            await trio.sleep(0.02)
            events = [e["event"] for e in stack.aegisd.audit_events()]
    assert "withdrawn" in events and "proxied" not in events


async def test_no_credential_reaches_the_shim_or_the_model() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack() as stack:
            command = [str(SHIM), "--socket", str(stack.aegisd.socket), "--log-level", "debug"]
            async with raw_shim(command, shim_env()) as shim:
                await shim.initialize()
                rid = await shim.request(
                    "tools/call",
                    {
                        "name": "demo_delete",
                        "arguments": {"repo": "old-experiments"},
                        "_meta": {"progressToken": 1},
                    },
                )
                await shim.wait_for(lambda m: m.get("method") == "notifications/progress")
                await stack.answer("Delete repo old-experiments")
                answer = await shim.response(rid)
                environ = _proc_text(shim.process.pid, "environ")
                cmdline = _proc_text(shim.process.pid, "cmdline")
            secrets = stack.issued_secrets()
            audit = stack.aegisd.audit.read_text()
            daemon_log = stack.aegisd.log.read_text()
    assert answer["result"]["structuredContent"]["status"] == 200
    assert secrets, "the tenant issued credentials for the approval"
    output = (bytes(shim.out) + bytes(shim.err)).decode("utf-8", "replace")
    assert environ and cmdline
    for secret in secrets:
        assert secret not in output
        assert secret not in environ and secret not in cmdline
        assert secret not in audit and secret not in daemon_log
