"""``@with_async_authorization`` under trio: plain functions and MCPServer tools, real daemon.

The asyncio side of the decorator is in ``test_client_asyncio.py``.
"""

from __future__ import annotations

import gc
import inspect
import weakref
from collections.abc import Mapping
from typing import Literal

import pytest
import trio
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer

from aegisd.client import (
    ApprovalDenied,
    ApprovalExpired,
    Credentials,
    DaemonUnavailable,
    InvalidParams,
    PendingEvent,
    PolicyDenied,
    current_credentials,
    with_async_authorization,
)

from .harness import AegisdProcess

TIMEOUT = 20


async def test_injects_credentials_and_forgets_them(aegisd: AegisdProcess) -> None:
    refs: list[weakref.ref[Credentials]] = []

    @with_async_authorization("t.token", params=["outcome"], socket=aegisd.socket)
    async def tool(outcome: str, credentials: Credentials) -> str:
        """Docstring kept."""
        assert current_credentials() is credentials
        refs.append(weakref.ref(credentials))
        return credentials.access_token[:18]

    with trio.fail_after(TIMEOUT):
        assert await tool("approve") == "aegis-test-secret-"
    gc.collect()
    assert refs[0]() is None  # nothing kept a reference once the call returned
    with pytest.raises(LookupError):
        current_credentials()
    assert tool.__name__ == "tool" and tool.__doc__ == "Docstring kept."
    assert list(inspect.signature(tool).parameters) == ["outcome"]
    assert "credentials" not in tool.__annotations__


async def test_context_accessor_only(aegisd: AegisdProcess) -> None:
    @with_async_authorization("t.token", params="outcome", socket=aegisd.socket, inject=None)
    async def tool(outcome: str) -> bool:
        return current_credentials().access_token in aegisd.issued()

    with trio.fail_after(TIMEOUT):
        assert await tool(outcome="approve")


async def test_credentials_are_reset_when_the_function_raises(aegisd: AegisdProcess) -> None:
    @with_async_authorization("t.token", params=["outcome"], socket=aegisd.socket)
    async def tool(outcome: str, credentials: Credentials) -> None:
        raise ValueError("boom")

    with trio.fail_after(TIMEOUT), pytest.raises(ValueError, match="boom"):
        await tool("approve")
    with pytest.raises(LookupError):
        current_credentials()


async def test_concurrent_calls_see_their_own_credential(aegisd: AegisdProcess) -> None:
    seen: list[tuple[str, str]] = []

    @with_async_authorization("t.token", params=["outcome"], socket=aegisd.socket)
    async def tool(outcome: str, label: str, credentials: Credentials) -> None:
        await trio.sleep(0.05)  # overlap with the other call
        assert current_credentials() is credentials
        seen.append((label, credentials.access_token))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tool, "approve", "a")
            nursery.start_soon(tool, "approve", "b")
    assert sorted(label for label, _ in seen) == ["a", "b"]
    assert seen[0][1] != seen[1][1]


async def test_param_mappings(aegisd: AegisdProcess) -> None:
    events: list[PendingEvent] = []

    def derive(args: Mapping[str, object]) -> Mapping[str, object]:
        assert args["retries"] == 3  # defaults are applied before the mapping sees them
        return {"outcome": "approve" if args["ok"] else "deny"}

    @with_async_authorization(
        "t.token", params=derive, socket=aegisd.socket, on_pending=events.append
    )
    async def by_callable(ok: bool, retries: int = 3) -> str:
        return "done"

    @with_async_authorization("t.token", params={"outcome": "decision"}, socket=aegisd.socket)
    async def by_mapping(decision: str | None = None) -> str:
        return "done"

    with trio.fail_after(TIMEOUT):
        assert await by_callable(True) == "done"
        with pytest.raises(ApprovalDenied):
            await by_callable(ok=False)
        assert await by_mapping("approve") == "done"
        with pytest.raises(InvalidParams):  # None is left out, so the daemon says "missing"
            await by_mapping()
    assert len(events) == 2 and events[0].binding_message.startswith("Token approve")


async def test_refusals_raise_outside_mcp(aegisd: AegisdProcess, tmp_path: object) -> None:
    @with_async_authorization("t.token", params=["outcome"], socket=aegisd.socket)
    async def tool(outcome: str) -> None:
        raise AssertionError("must not run")  # pragma: no cover

    @with_async_authorization("t.read", socket=aegisd.socket)
    async def proxy_only() -> None:
        raise AssertionError("must not run")  # pragma: no cover

    @with_async_authorization("t.token", socket=f"{tmp_path}/none.sock")
    async def nowhere() -> None:
        raise AssertionError("must not run")  # pragma: no cover

    with trio.fail_after(TIMEOUT):
        with pytest.raises(ApprovalExpired):
            await tool("expire")
        with pytest.raises(PolicyDenied):
            await proxy_only()
        with pytest.raises(DaemonUnavailable):
            await nowhere()


async def test_cancelling_a_decorated_call_withdraws(aegisd: AegisdProcess) -> None:
    started = trio.Event()

    @with_async_authorization(
        "t.token", params=["outcome"], socket=aegisd.socket, on_pending=lambda e: started.set()
    )
    async def tool(outcome: str) -> None:
        raise AssertionError("must not run")  # pragma: no cover

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tool, "hang")
            await started.wait()
            nursery.cancel_scope.cancel()
        while not any(
            e["event"] == "withdrawn" and e.get("digest") and e.get("action") == "t.token"
            for e in aegisd.audit_events()
        ):
            await trio.sleep(0.02)


def test_decoration_errors() -> None:
    def sync_tool() -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="async"):
        with_async_authorization("t.token")(sync_tool)  # type: ignore[arg-type]

    async def tool(repo: str) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="owner"):
        with_async_authorization("t.token", params=["repo", "owner"])(tool)

    async def takes_kwargs(**kwargs: str) -> None:
        pass  # pragma: no cover

    with_async_authorization("t.token", params=["anything"])(takes_kwargs)  # checked at call


# ---- MCPServer tools -----------------------------------------------------------------------


def build_server(aegisd: AegisdProcess) -> MCPServer:
    srv = MCPServer("decorated")

    @srv.tool()
    @with_async_authorization("t.token", params=["outcome"], socket=aegisd.socket)
    async def fetch(outcome: str, ctx: Context, credentials: Credentials) -> str:
        """Fetch something that needs a token."""
        return f"token:{len(credentials.access_token)}"

    return srv


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_mcpserver_tool(aegisd: AegisdProcess, mode: Literal["legacy", "auto"]) -> None:
    messages: list[str] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    with trio.fail_after(TIMEOUT):
        async with Client(build_server(aegisd), mode=mode) as client:
            (tool,) = (await client.list_tools()).tools
            ok = await client.call_tool("fetch", {"outcome": "approve"}, progress_callback=progress)
            denied = await client.call_tool("fetch", {"outcome": "deny"})
            expired = await client.call_tool("fetch", {"outcome": "expire"})
    assert tool.description == "Fetch something that needs a token."
    assert tool.input_schema["required"] == ["outcome"]
    assert set(tool.input_schema["properties"]) == {"outcome"}
    assert ok.structured_content == {"result": "token:50"} and not ok.is_error
    assert len(messages) == 1 and messages[0].startswith("Approve on your phone: Token approve #")
    assert denied.is_error and denied.structured_content is not None
    assert denied.structured_content["error"]["code"] == "approval_denied"
    assert expired.is_error and expired.structured_content is not None
    assert expired.structured_content["error"]["code"] == "approval_expired"
    text = "".join(getattr(c, "text", "") for c in [*ok.content, *denied.content])
    assert not any(token in text for token in aegisd.issued())


async def test_mcpserver_cancellation_withdraws(aegisd: AegisdProcess) -> None:
    got_progress = trio.Event()

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        got_progress.set()

    before = sum(1 for e in aegisd.audit_events() if e["event"] == "withdrawn")
    with trio.fail_after(TIMEOUT):
        async with Client(build_server(aegisd), mode="legacy") as client:
            with trio.move_on_after(TIMEOUT / 2) as scope:
                async with trio.open_nursery() as nursery:

                    async def call() -> None:
                        await client.call_tool(
                            "fetch", {"outcome": "hang"}, progress_callback=progress
                        )

                    nursery.start_soon(call)
                    await got_progress.wait()
                    nursery.cancel_scope.cancel()
            assert not scope.cancelled_caught
        while sum(1 for e in aegisd.audit_events() if e["event"] == "withdrawn") == before:
            await trio.sleep(0.02)
