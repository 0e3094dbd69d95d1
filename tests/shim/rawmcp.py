"""A hand-rolled JSON-RPC client for aegis-mcp that keeps every byte the shim writes.

The SDK client hides the transport; these tests need it bare: to close stdin while a call is
pending (no ``notifications/cancelled`` first) and to scan everything the shim printed on
stdout and stderr for secrets.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class RawShim:
    process: trio.Process
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)
    _next_id: int = 0

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(
            json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n"
        )

    async def request(self, method: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        await self.send({"id": self._next_id, "method": method, "params": params})
        return self._next_id

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            for message in self.messages:
                if predicate(message):
                    return message
            self._changed = trio.Event()
            await self._changed.wait()

    async def response(self, request_id: int) -> dict[str, Any]:
        return await self.wait_for(lambda m: m.get("id") == request_id and "method" not in m)

    async def initialize(self) -> dict[str, Any]:
        rid = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
        )
        answer = await self.response(rid)
        await self.send({"method": "notifications/initialized"})
        return answer

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def _pump_out(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            self.out += chunk
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    self.messages.append(json.loads(line))
            self._changed.set()

    async def _pump_err(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.err += chunk


@asynccontextmanager
async def raw_shim(command: list[str], env: dict[str, str]) -> AsyncIterator[RawShim]:
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    shim = RawShim(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shim._pump_out)
            nursery.start_soon(shim._pump_err)
            yield shim
            if process.stdin is not None:
                await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
