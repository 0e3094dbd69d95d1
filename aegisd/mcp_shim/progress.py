"""How a call that waits for the person's approval shows it to the host.

``Progress`` turns the daemon's ``Pending`` events into MCP progress notifications ("Approve
on your phone: <binding message>", repeated with the seconds left every ``keepalive``
seconds); ``TaskProgress`` puts the same into a task's ``statusMessage`` instead. Progress is
a courtesy: nothing here may end or delay the approval, and it never carries more than the
binding message the daemon rendered.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

from aegisd.client import PendingEvent

if TYPE_CHECKING:
    from mcp.server.session import ServerSession

    from aegisd.mcp_shim.tasks import TaskRun

__all__ = ["KEEPALIVE_SECONDS", "Progress", "TaskProgress"]

log = logging.getLogger("aegisd.mcp_shim")

KEEPALIVE_SECONDS: Final = 15.0


class Progress:
    """Turns the daemon's ``Pending`` events into MCP progress for one tool call."""

    def __init__(self, session: ServerSession | None, keepalive: float) -> None:
        self._session = session
        self._keepalive = keepalive
        self._step = 0
        self.event: PendingEvent | None = None

    async def report(self, event: PendingEvent, *, remaining: bool = False) -> None:
        if self._session is None:
            return
        self._step += 1
        message = f"Approve on your phone: {event.binding_message}"
        if remaining:
            left = max(0, round(event.expires_at - time.time()))
            message += f" (expires in {left} s)"
        try:
            await self._session.report_progress(self._step, None, message)
        except Exception:  # progress is a courtesy: never let it end the approval
            log.debug("could not report progress", exc_info=True)

    async def on_pending(self, event: PendingEvent) -> None:
        self.event = event
        await self.report(event)

    async def keep_alive(self) -> None:
        """Repeat the progress while the person has not answered (some hosts reset on it)."""
        import anyio

        while True:
            await anyio.sleep(self._keepalive)
            if self.event is not None:
                await self.report(self.event, remaining=True)


class TaskProgress(Progress):
    """A task's pending approval shows in its ``statusMessage`` (``tasks/get``)."""

    def __init__(self, run: TaskRun) -> None:
        super().__init__(None, KEEPALIVE_SECONDS)
        self._run = run

    async def report(self, event: PendingEvent, *, remaining: bool = False) -> None:
        self._run.set_message(
            f"Waiting for the person's approval on their phone: {event.binding_message}"
        )
