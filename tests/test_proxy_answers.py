"""What a hostile upstream can do to a proxied answer, and what a parameter can do to its URL.

Issue 13, findings 8 and 11: ``timeout`` is one deadline for the whole exchange (an upstream
that trickles its body cannot hold a request open); an answer's headers can never push the
``ProxyResponse`` past one frame after the API has done the work; a parameter whose
percent-decoded form is a ``.``/``..`` path segment never reaches the API. The upstream is a
small loopback HTTP server in this process; the daemon runs in-process on a real socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio

from aegisd.client import AegisClient, InvalidParams, UpstreamError
from aegisd.config import load_config
from aegisd.daemon.daemon import Daemon
from aegisd.frame_budget import HEADER_VALUE_MAX
from tests.corekit import Files, audit_records

BIG_BODY = 56 * 1024


class Hostile:
    """``/trickle`` sends its 60-byte body one byte every 0.1 s; ``/big-header`` answers a
    56 KiB body with an 8 KiB header; anything else answers ``ok``. Paths are recorded."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.stop = threading.Event()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hostile.paths.append(self.path)
                if self.path.startswith("/trickle"):
                    self.send_response(200)
                    self.send_header("content-length", "60")
                    self.end_headers()
                    for _ in range(60):
                        if hostile.stop.wait(0.1):
                            return
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                body = b"b" * BIG_BODY if self.path.startswith("/big-header") else b"ok"
                self.send_response(200)
                if self.path.startswith("/big-header"):
                    self.send_header("x-big", "v" * 8192)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    h = Hostile()
    yield h
    h.close()


async def start(
    write_config: Callable[..., Files], nursery: trio.Nursery, port: int
) -> tuple[Files, Daemon]:
    base = f"http://127.0.0.1:{port}"
    files = write_config(
        callers=[{"name": "t", "exe": ["*python*"], "actions": ["api.*"]}],
        actions={
            "api.trickle": {
                "approval": "none",
                "request": {"url": f"{base}/trickle", "timeout": 0.5},
            },
            "api.big": {
                "approval": "none",
                "request": {"url": f"{base}/big-header", "response_headers": ["x-big"]},
            },
            "api.repo": {
                "approval": "none",
                "params": {"repo": "^[A-Za-z0-9.%_-]{1,40}$"},
                "request": {"url": f"{base}/repos/{{repo}}/issues?q=1"},
            },
            "api.search": {
                "approval": "none",
                "params": {"q": "^[A-Za-z0-9.%_-]{1,40}$"},
                "request": {"url": f"{base}/search?q={{q}}"},
            },
        },
    )
    daemon = Daemon(load_config(files.config))
    await nursery.start(daemon.serve)
    return files, daemon


async def test_timeout_is_a_deadline_for_the_whole_answer(
    write_config: Callable[..., Files], hostile: Hostile, nursery: trio.Nursery
) -> None:
    files, daemon = await start(write_config, nursery, hostile.port)
    # Real time on purpose: the trickle is real bytes on a real socket, each within httpx's
    # per-read timeout, and only a deadline over the whole exchange stops it.
    t0 = time.monotonic()
    with trio.fail_after(10):
        async with AegisClient(files.socket) as c:
            with pytest.raises(UpstreamError) as info:
                await c.proxy("api.trickle")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"a 0.5 s timeout held the request for {elapsed:.1f} s"
    assert info.value.code == "upstream_error"
    assert "timeout" in info.value.message
    refused = [r for r in audit_records(daemon.audit.path) if r["event"] == "refused"]
    assert refused[-1]["code"] == "upstream_error" and "timeout" in str(refused[-1]["reason"])


async def test_big_headers_cannot_overflow_the_frame_after_the_side_effect(
    write_config: Callable[..., Files], hostile: Hostile, nursery: trio.Nursery
) -> None:
    files, _ = await start(write_config, nursery, hostile.port)
    with trio.fail_after(10):
        async with AegisClient(files.socket) as c:
            result = await c.proxy("api.big")
            assert (await c.proxy("api.repo", repo="still-served")).body == b"ok"
    assert result.status == 200 and len(result.body) == BIG_BODY
    assert result.headers["x-big"] == "v" * HEADER_VALUE_MAX
    assert hostile.paths.count("/big-header") == 1


@pytest.mark.parametrize(
    "value", ["..%2F", "%2e%2e", "%2E", "%252e%252e", "a%2F..%2Fb", "..%5C", "%25252e%25252e"]
)
async def test_encoded_dot_segments_never_reach_the_api(
    write_config: Callable[..., Files], hostile: Hostile, nursery: trio.Nursery, value: str
) -> None:
    files, _ = await start(write_config, nursery, hostile.port)
    with trio.fail_after(10):
        async with AegisClient(files.socket) as c:
            with pytest.raises(InvalidParams) as info:
                await c.proxy("api.repo", repo=value)
            assert value not in info.value.message  # never echoed
            # the same value in the query, and a dot inside a name, are harmless
            assert (await c.proxy("api.search", q=value)).body == b"ok"
            assert (await c.proxy("api.repo", repo="v1.2..3")).body == b"ok"
    assert not any(p.startswith("/repos/") and "v1.2" not in p for p in hostile.paths)
