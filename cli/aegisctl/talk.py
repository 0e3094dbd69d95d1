"""Running one SDK call against the daemon from a click command.

Owns the bridge between click's synchronous world and the async SDK (``trio.run``); every
command that talks to the daemon goes through ``call``. Must not format output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from aegisd.client import AegisClient

T = TypeVar("T")


def call(socket: Path, fn: Callable[[AegisClient], Awaitable[T]], client: str = "aegisctl") -> T:
    """Connect, run ``fn(client)``, disconnect; AegisError propagates to ``main``."""

    async def main() -> T:
        async with AegisClient(socket, client_name=client) as c:
            return await fn(c)

    return trio.run(main)
