"""Live tool lists: a policy reload, or the daemon leaving and coming back, reaches the host.

Real parts only: the daemon is a real (scripted-approver) aegisd process that the test edits
and sends SIGHUP to; the host is the official SDK client over stdio, in the handshake era
(``notifications/tools/list_changed`` through ``ClientSession``'s message handler) and in
2026-07-28 (``subscriptions/listen``). Waits are bounded by a few seconds of wall time.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from mcp import Client, ClientSession, stdio_client
from mcp.types import ToolListChangedNotification

from aegisd.client import AegisClient
from tests.sdk.harness import AegisdProcess, Upstream, cleanup, start_aegisd

from .conftest import shim_params

TIMEOUT = 30
NOTICE = 5.0  # "within a few seconds"

EXTRA_ACTION = """
[actions."t.extra"]
description = "Added by a reload"
title = "Extra"
approval = "none"
request = {{ method = "GET", url = "{url}/repos" }}
"""


@pytest.fixture
def own_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream)
    yield process
    cleanup(process)


async def reload(aegisd: AegisdProcess, text: str) -> int:
    """Write the new config, SIGHUP the daemon, wait until its generation moved."""
    async with AegisClient(aegisd.socket) as c:
        before = (await c.status()).policy_generation
    fresh = aegisd.config.with_suffix(".new")  # atomic: the daemon never reads half a file
    fresh.write_text(text)
    fresh.replace(aegisd.config)
    assert aegisd.proc is not None
    aegisd.proc.send_signal(signal.SIGHUP)
    while True:
        async with AegisClient(aegisd.socket) as c:
            now = (await c.status()).policy_generation
        if now != before:
            return now
        await trio.sleep(0.05)


class Notices:
    """Counts ``tools/list_changed`` notifications a ``ClientSession`` receives."""

    def __init__(self) -> None:
        self.count = 0
        self._event = trio.Event()

    async def handler(self, message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            self._bump()

    def _bump(self) -> None:
        self.count += 1
        self._event.set()
        self._event = trio.Event()

    async def next(self, seen: int) -> None:
        with trio.fail_after(NOTICE):
            while self.count <= seen:
                await self._event.wait()


async def test_reload_and_daemon_restart_send_list_changed(own_aegisd: AegisdProcess) -> None:
    aegisd = own_aegisd
    original = aegisd.config.read_text()
    url = original.split('url = "', 1)[1].split("/repos", 1)[0]
    notices = Notices()
    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write, message_handler=notices.handler) as session:
                await session.initialize()
                names = {t.name for t in (await session.list_tools()).tools}
                assert "t_extra" not in names

                # a reload that changes nothing the host sees: no notification
                generation = await reload(aegisd, original + "\n# a comment\n")
                assert generation == 1
                await trio.sleep(1.0)
                assert notices.count == 0

                # a new action: announced, and listed
                await reload(aegisd, original + EXTRA_ACTION.format(url=url))
                await notices.next(0)
                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert tools["t_extra"].title == "Extra"

                # the daemon goes away: announced (only aegis_status is left) ...
                await trio.to_thread.run_sync(aegisd.stop)
                await notices.next(1)
                assert [t.name for t in (await session.list_tools()).tools] == ["aegis_status"]
                # ... and comes back: announced again
                await trio.to_thread.run_sync(aegisd.start)
                await notices.next(2)
                assert "t_extra" in {t.name for t in (await session.list_tools()).tools}
                # aegis_status while nothing changed announces nothing
                seen = notices.count
                status = await session.call_tool("aegis_status", {})
                assert not status.is_error
                await trio.sleep(0.5)
                assert notices.count == seen


async def test_subscriptions_listen_in_the_2026_era(own_aegisd: AegisdProcess) -> None:
    aegisd = own_aegisd
    original = aegisd.config.read_text()
    url = original.split('url = "', 1)[1].split("/repos", 1)[0]
    with trio.fail_after(TIMEOUT):
        async with Client(shim_params(aegisd.socket), mode="auto") as client:
            assert client.protocol_version == "2026-07-28"
            assert "t_extra" not in {t.name for t in (await client.list_tools()).tools}
            async with client.listen(tools_list_changed=True) as sub:
                await reload(aegisd, original + EXTRA_ACTION.format(url=url))
                with trio.fail_after(NOTICE):
                    async for _event in sub:
                        break
            assert "t_extra" in {t.name for t in (await client.list_tools()).tools}
