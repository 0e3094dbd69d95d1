"""Proxy mode keeps nothing between requests, binds the body to the approval, and one
connection cannot queue unbounded work.

A local HTTP upstream records what it receives; the daemon runs in-process on a real socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from aegisd.client import AegisClient, RateLimited
from aegisd.config import load_config
from aegisd.daemon.daemon import Daemon
from aegisd.policy import request_digest
from tests.corekit import Files, audit_records


class Upstream:
    """Sets a cookie on every answer and remembers the Cookie headers it was sent."""

    def __init__(self) -> None:
        self.cookies_seen: list[str | None] = []
        self.hold = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if self.path.startswith("/slow"):
                    upstream.hold.wait(10)
                upstream.cookies_seen.append(self.headers.get("cookie"))
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("set-cookie", "session=stolen-session; Path=/")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


def actions(port: int) -> dict[str, dict[str, object]]:
    base = f"http://127.0.0.1:{port}"
    return {
        "api.read": {"approval": "none", "request": {"url": f"{base}/read"}},
        "api.other": {"approval": "none", "request": {"url": f"{base}/other"}},
        "api.post": {
            "approval": "none",
            "request": {"method": "POST", "url": f"{base}/post", "body": True},
        },
        "api.slow": {"approval": "none", "request": {"url": f"{base}/slow", "timeout": 20.0}},
    }


async def start(files: Files, nursery: trio.Nursery) -> Daemon:
    daemon = Daemon(load_config(files.config))
    await nursery.start(daemon.serve)
    return daemon


async def test_a_cookie_one_api_call_sets_never_rides_on_another(
    write_config: Callable[..., Files], upstream: Upstream, nursery: trio.Nursery
) -> None:
    files = write_config(
        callers=[{"name": "t", "exe": ["*python*"], "actions": ["api.*"]}],
        actions=actions(upstream.port),
    )
    await start(files, nursery)
    with trio.fail_after(10):
        async with AegisClient(files.socket) as c:
            await c.proxy("api.read")
            await c.proxy("api.other")
            await c.proxy("api.read")
    assert upstream.cookies_seen == [None, None, None]


async def test_the_body_is_part_of_what_is_approved_and_audited(
    write_config: Callable[..., Files], upstream: Upstream, nursery: trio.Nursery
) -> None:
    params = {"repo": "x"}
    assert request_digest("c", "a", params) != request_digest("c", "a", params, b"{}")
    assert request_digest("c", "a", params, b"{}") != request_digest("c", "a", params, b"[]")
    files = write_config(
        callers=[{"name": "t", "exe": ["*python*"], "actions": ["api.*"]}],
        actions=actions(upstream.port),
    )
    daemon = await start(files, nursery)
    with trio.fail_after(10):
        async with AegisClient(files.socket) as c:
            await c.proxy("api.post", body='{"a": 1}')
            await c.proxy("api.post", body='{"a": 2}')
    requests = [r for r in audit_records(daemon.audit.path) if r["event"] == "request"]
    assert len(requests) == 2
    assert requests[0]["digest"] != requests[1]["digest"]
    assert requests[0]["body_bytes"] == 8
    assert requests[0]["body_sha256"] != requests[1]["body_sha256"]


async def test_one_connection_cannot_queue_unbounded_requests(
    write_config: Callable[..., Files], upstream: Upstream, nursery: trio.Nursery
) -> None:
    files = write_config(
        callers=[{"name": "t", "exe": ["*python*"], "actions": ["api.*"]}],
        actions=actions(upstream.port),
    )
    await start(files, nursery)
    refused: list[RateLimited] = []
    with trio.fail_after(15):
        async with AegisClient(files.socket) as c:

            async def one() -> None:
                try:
                    await c.proxy("api.slow")
                except RateLimited as exc:
                    refused.append(exc)

            async with trio.open_nursery() as n:
                for _ in range(70):
                    n.start_soon(one)
                with trio.fail_after(5):
                    while len(refused) < 6:
                        await trio.sleep(0.01)
                upstream.hold.set()  # let the 64 in flight finish
    assert len(refused) == 6
    assert all(e.retry_after == 1.0 for e in refused)
