"""A minimal Chrome DevTools Protocol client for the phone-page test: headless Chromium
driven over its debugging websocket (wsproto on a trio TCP stream)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpSession:
    """One websocket to one page target; ``call`` sends a command and awaits its result."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._next_id = 0
        self._buffer = ""
        self._ready: list[dict[str, Any]] = []

    async def _next_message(self) -> dict[str, Any]:
        while not self._ready:
            data = await self._stream.receive_some(65536)
            if not data:
                raise ConnectionError("devtools websocket closed")
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, TextMessage):
                    self._buffer += event.data
                    if event.message_finished:
                        self._ready.append(json.loads(self._buffer))
                        self._buffer = ""
                elif isinstance(event, Ping):
                    await self._stream.send_all(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise ConnectionError("devtools websocket closed")
        return self._ready.pop(0)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        msg_id = self._next_id
        payload = json.dumps({"id": msg_id, "method": method, "params": params})
        await self._stream.send_all(self._ws.send(TextMessage(data=payload)))
        while True:
            message = await self._next_message()
            if message.get("id") == msg_id:  # events and stale answers are skipped
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )


@asynccontextmanager
async def _websocket(url: str) -> AsyncIterator[CdpSession]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=parts.netloc, target=parts.path)))
        accepted = False
        while not accepted:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("devtools refused the websocket")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                else:
                    raise ConnectionError(f"devtools websocket: unexpected {event!r}")
        yield CdpSession(stream, ws)


@asynccontextmanager
async def open_page(chromium: str, url: str) -> AsyncIterator[CdpSession]:
    """Launch headless Chromium on ``url`` with a throw-away profile and attach to that page."""
    # A short profile path: Chromium puts a Unix socket there (108-byte limit), and pytest's
    # tmp_path can be too long for it.
    profile = Path(tempfile.mkdtemp(prefix="aegis-chromium-", dir="/tmp"))
    port_file = profile / "DevToolsActivePort"
    proc = await trio.lowlevel.open_process(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not port_file.exists() or not port_file.read_text().strip():
            await trio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            page_ws = None
            while page_ws is None:
                targets = (await c.get("/json/list")).json()
                page_ws = next(
                    (t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"),
                    None,
                )
                if page_ws is None:
                    await trio.sleep(0.05)
        async with _websocket(page_ws) as session:
            yield session
    finally:
        proc.terminate()
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
