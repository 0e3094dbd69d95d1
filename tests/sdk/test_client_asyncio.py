"""The SDK under asyncio (anyio's pytest plugin) against the same real aegisd process.

These tests carry the ``anyio`` marker; ``conftest.py`` removes pytest-trio's automatic marker
from them, so both plugins share one run. ``anyio.fail_after`` bounds every I/O test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import anyio
import pytest
import sniffio
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer

from aegisd.client import (
    AegisClient,
    ApprovalDenied,
    ApprovalExpired,
    BlockingAegisClient,
    CallerNotAllowed,
    Credentials,
    DaemonUnavailable,
    InvalidParams,
    PendingEvent,
    PolicyDenied,
    UnknownAction,
    current_credentials,
    with_async_authorization,
)

from .harness import AegisdProcess

TIMEOUT = 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_runs_on_asyncio(aegisd: AegisdProcess) -> None:
    assert sniffio.current_async_library() == "asyncio"
    with anyio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            result = await c.proxy("t.get", name="aegis-demo")
            names = {a.name for a in await c.list_actions()}
    assert result.status == 200 and result.body == b'{"name": "aegis-demo"}'
    assert "t.read" in names


@pytest.mark.anyio
async def test_authorize_with_pending_callback(aegisd: AegisdProcess) -> None:
    events: list[PendingEvent] = []

    async def on_pending(event: PendingEvent) -> None:
        events.append(event)

    with anyio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket, on_pending=on_pending) as c:
            creds = await c.authorize("t.token", outcome="approve")
            proxied = await c.proxy("t.delete", repo="asyncio", outcome="approve")
    assert creds.access_token in aegisd.issued()
    assert proxied.status == 204
    assert [e.binding_message.split(" #")[0] for e in events] == [
        "Token approve",
        "Delete asyncio approve",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.authorize("t.token", outcome="deny"), ApprovalDenied),
        (lambda c: c.proxy("t.delete", repo="r", outcome="expire"), ApprovalExpired),
        (lambda c: c.proxy("t.unknown"), UnknownAction),
        (lambda c: c.proxy("other.admin"), CallerNotAllowed),
        (lambda c: c.proxy("t.get", name="no/slash"), InvalidParams),
        (lambda c: c.proxy("t.denied"), PolicyDenied),
    ],
)
async def test_errors_raise_their_class(
    aegisd: AegisdProcess,
    call: Callable[[AegisClient], Awaitable[object]],
    error: type[Exception],
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            with pytest.raises(error):
                await call(c)


@pytest.mark.anyio
async def test_cancel_withdraws(aegisd: AegisdProcess) -> None:
    with anyio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            with anyio.CancelScope() as scope:

                def on_pending(event: PendingEvent) -> None:
                    scope.cancel()

                await c.authorize("t.token", on_pending=on_pending, outcome="hang")
            assert scope.cancelled_caught
            while await c.pending():
                await anyio.sleep(0.02)
    assert any(
        e["event"] == "withdrawn" and e.get("action") == "t.token" for e in aegisd.audit_events()
    )


@pytest.mark.anyio
async def test_daemon_unavailable(tmp_path: object) -> None:
    with anyio.fail_after(TIMEOUT), pytest.raises(DaemonUnavailable):
        async with AegisClient(f"{tmp_path}/none.sock"):
            pass  # pragma: no cover


@pytest.mark.anyio
async def test_decorator_on_asyncio(aegisd: AegisdProcess) -> None:
    seen: list[str] = []

    @with_async_authorization("t.token", params=["outcome"], socket=aegisd.socket)
    async def tool(outcome: str, *, credentials: Credentials) -> int:
        seen.append(current_credentials().access_token)
        assert credentials is current_credentials()
        await asyncio.sleep(0)  # really asyncio
        return len(credentials.access_token)

    with anyio.fail_after(TIMEOUT):
        assert await tool("approve") > 0
        with pytest.raises(ApprovalDenied):
            await tool(outcome="deny")
    assert seen[0] in aegisd.issued()
    with pytest.raises(LookupError):
        current_credentials()


@pytest.mark.anyio
async def test_decorated_mcpserver_tool_on_asyncio(aegisd: AegisdProcess) -> None:
    srv = MCPServer("asyncio-tools")

    @srv.tool()
    @with_async_authorization("t.token", params={"outcome": "answer"}, socket=aegisd.socket)
    async def fetch(answer: str, ctx: Context, credentials: Credentials) -> str:
        """Fetch something with a token."""
        return f"ok:{len(credentials.access_token)}"

    messages: list[str] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    with anyio.fail_after(TIMEOUT):
        async with Client(srv, mode="legacy") as client:
            tools = (await client.list_tools()).tools
            ok = await client.call_tool("fetch", {"answer": "approve"}, progress_callback=progress)
            no = await client.call_tool("fetch", {"answer": "deny"})
    assert tools[0].input_schema["required"] == ["answer"]
    assert "credentials" not in tools[0].input_schema["properties"]
    assert not ok.is_error and ok.structured_content == {"result": "ok:50"}
    assert messages and messages[0].startswith("Approve on your phone: Token approve #")
    assert no.is_error and no.structured_content == {
        "error": {"code": "approval_denied", "message": "the request was denied on the phone"}
    }


def test_blocking_client(aegisd: AegisdProcess) -> None:
    """The blocking wrapper, from a thread with no event loop."""
    box: dict[str, object] = {}

    def work() -> None:
        c = BlockingAegisClient(aegisd.socket)
        box["status"] = c.status().daemon_version
        box["read"] = c.proxy("t.read").status
        box["token"] = c.authorize("t.token", outcome="approve").access_token
        box["actions"] = len(c.list_actions())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert box["read"] == 200 and box["token"] in aegisd.issued() and box["actions"]
