"""The SDK end to end: dev tenant (CIBA, Token Vault, demo API), real aegisd, phone answers.

Trio tests run the tenant in-process (``dev_stack``); the asyncio test runs it as
``aegisctl dev-tenant`` and answers with ``aegisctl dev-tenant approve --latest``, as the
README tells a person to.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import anyio
import pytest
import trio

from aegisd.client import (
    AegisClient,
    ApprovalDenied,
    ApprovalExpired,
    PendingEvent,
    with_async_authorization,
)
from aegisd.client import Credentials as Creds

from .devstack import DevStack, cli_dev_stack, dev_stack
from .harness import VENV_BIN

TIMEOUT = 30


async def test_token_and_proxy_through_the_phone() -> None:
    events: list[PendingEvent] = []
    with trio.fail_after(TIMEOUT):
        async with dev_stack() as stack, AegisClient(stack.aegisd.socket) as c:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stack.answer, "Issue a demo token")
                creds = await c.authorize("demo.token", on_pending=events.append)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stack.answer, "Delete repo scratch")
                deleted = await c.proxy("demo.delete", on_pending=events.append, repo="scratch")
            listing = await c.proxy("demo.read")
            issued = stack.issued_secrets()
    assert creds.kind == "ciba_token" and creds.access_token.count(".") == 2  # a JWT
    assert creds.access_token in issued
    assert [e.binding_message.split(" #")[0] for e in events] == [
        "Issue a demo token",
        "Delete repo scratch",
    ]
    assert deleted.status == 200
    assert json.loads(deleted.body) == {"deleted": "scratch", "by": "auth0|aegis-demo"}
    assert "scratch" not in {r["name"] for r in json.loads(listing.body)}
    assert not any(secret.encode() in deleted.body + listing.body for secret in issued)


async def test_deny_and_cancel() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack() as stack, AegisClient(stack.aegisd.socket) as c:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: stack.answer("Delete repo aegis-demo", approve=False))
                with pytest.raises(ApprovalDenied):
                    await c.proxy("demo.delete", repo="aegis-demo")

            with trio.CancelScope() as scope:
                await c.proxy("demo.delete", on_pending=lambda e: scope.cancel(), repo="x")
            assert scope.cancelled_caught
            while await c.pending():
                await trio.sleep(0.02)
            events = [e["event"] for e in stack.aegisd.audit_events()]
    assert "denied" in events and "withdrawn" in events


async def test_expiry() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack(requested_expiry=1) as stack, AegisClient(stack.aegisd.socket) as c:
            with pytest.raises(ApprovalExpired):
                await c.authorize("demo.token")


async def test_decorator_through_the_phone() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack() as stack:

            @with_async_authorization("demo.token", socket=stack.aegisd.socket)
            async def whoami(credentials: Creds) -> str:
                return credentials.access_token.split(".")[0]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stack.answer, "Issue a demo token")
                header = await whoami()
    assert header.startswith("eyJ")


@pytest.fixture
def cli_stack() -> Iterator[DevStack]:
    with cli_dev_stack() as stack:
        yield stack


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_asyncio_with_the_cli_tenant(cli_stack: DevStack) -> None:
    def approve_latest() -> None:
        cmd = [str(VENV_BIN / "aegisctl"), "dev-tenant", "approve"]
        subprocess.run([*cmd, "--port", str(cli_stack.port), "--latest"], check=True)

    async def on_pending(event: PendingEvent) -> None:
        await anyio.to_thread.run_sync(approve_latest)

    with anyio.fail_after(TIMEOUT):
        async with AegisClient(cli_stack.aegisd.socket) as c:
            result = await c.proxy("demo.delete", on_pending=on_pending, repo="old-experiments")
    assert result.status == 200
    assert json.loads(result.body)["deleted"] == "old-experiments"
