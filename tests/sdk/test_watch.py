"""``Watch``: the daemon's policy generation, pushed to a waiting client on every reload.

A real aegisd process, its config edited and SIGHUP sent; ``Welcome``, ``StatusReport`` and
``PolicyChanged`` carry the same number, a reload that fails keeps it, and cancelling the
watch leaves the connection usable.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import trio

from aegisd.client import AegisClient

from .harness import AegisdProcess, Upstream, cleanup, start_aegisd

TIMEOUT = 20


@pytest.fixture
def watched(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream)
    yield process
    cleanup(process)


async def test_watch_reports_each_successful_reload(watched: AegisdProcess) -> None:
    original = watched.config.read_text()
    seen: list[int] = []
    changed = trio.Event()

    async def on_change(generation: int) -> None:
        nonlocal changed
        seen.append(generation)
        changed.set()
        changed = trio.Event()

    def hup(text: str) -> None:
        fresh = watched.config.with_suffix(".new")  # atomic: the daemon never reads half
        fresh.write_text(text)
        fresh.replace(watched.config)
        assert watched.proc is not None
        watched.proc.send_signal(signal.SIGHUP)

    with trio.fail_after(TIMEOUT):
        async with AegisClient(watched.socket) as client:
            assert client.policy_generation == 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.watch_policy, on_change)
                await changed.wait()
                assert seen == [0]
                hup(original + "\n# touched\n")
                await changed.wait()
                assert seen == [0, 1]
                hup("this is not TOML [")  # a failed reload keeps the policy and its number
                while not any(e["event"] == "reload_failed" for e in watched.audit_events()):
                    await trio.sleep(0.02)
                hup(original)
                await changed.wait()
                nursery.cancel_scope.cancel()
            assert seen == [0, 1, 2]
            report = await client.status()  # the connection outlives the cancelled watch
        assert report.policy_generation == 2
        async with AegisClient(watched.socket) as again:
            assert again.policy_generation == 2
