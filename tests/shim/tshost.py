"""The TypeScript SDK host (``js/ts_host.mjs``) as a subprocess the tests talk to by lines.

The npm packages (``js/package.json``: ``@modelcontextprotocol/sdk`` and ``ajv``, pinned) are
installed by ``.ci/run`` into ``/var/tmp/aegis-npm-<first 12 hex of the file's sha256>``
(or ``$AEGIS_NPM_DIR``); without node or that folder the tests skip and say so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import SHIM, shim_env

JS = Path(__file__).with_name("js")


def npm_dir() -> Path:
    """Where ``.ci/run`` installs the JavaScript test clients; skips the test when absent."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed (.ci/run installs it)")
    digest = hashlib.sha256((JS / "package.json").read_bytes()).hexdigest()[:12]
    directory = Path(os.environ.get("AEGIS_NPM_DIR") or f"/var/tmp/aegis-npm-{digest}")
    for package in ("@modelcontextprotocol/sdk", "ajv"):
        if not (directory / "node_modules" / package / "package.json").exists():
            pytest.skip(
                f"the TypeScript MCP SDK client is not installed in {directory}: run .ci/run "
                f"(it runs npm install there with {JS / 'package.json'})"
            )
    return directory


@dataclass
class TsHost:
    process: trio.Process
    err: bytearray = field(default_factory=bytearray)
    _buffer: bytes = b""

    async def line(self) -> dict[str, Any]:
        """The next JSON line the host printed."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"ts_host ended early:\n{self.err.decode(errors='replace')}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        if message.get("event") == "exception":
            raise AssertionError(f"ts_host: {message['message']}\n{self.err.decode()}")
        return message

    async def until(self, event: str) -> dict[str, Any]:
        while True:
            message = await self.line()
            if message.get("event") == event:
                return message

    async def go(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"go\n")

    async def _pump_err(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.err += chunk


@asynccontextmanager
async def ts_host(
    scenario: str, socket: Path, *args: str, shim_args: tuple[str, ...] = ()
) -> AsyncIterator[TsHost]:
    """Run ``js/ts_host.mjs``; use the ``npm`` fixture first, so a missing install skips
    before the trio run starts (a skip raised inside it loses its message)."""
    directory = npm_dir()
    env = {**shim_env(), "AEGIS_NPM_DIR": str(directory)}
    argv = ["--socket", str(socket), *shim_args]
    process = await trio.lowlevel.open_process(
        ["node", str(JS / "ts_host.mjs"), scenario, str(SHIM), json.dumps(argv), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    host = TsHost(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(host._pump_err)
            yield host
            if process.stdin is not None:
                await process.stdin.aclose()
            with trio.move_on_after(10):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
