"""MCP Tasks (2025-11-25): a tool call the host polls instead of holding open.

A client that supports tasks sends ``tools/call`` with a ``task`` field (the shim marks the
tools that need approval ``execution.taskSupport = "optional"`` and declares
``capabilities.tasks``). The shim answers at once with a ``CreateTaskResult`` and runs the
call in the background, without ``--max-wait``: the person may take the approval's whole
lifetime, and no request of the host stays open meanwhile. ``tasks/get`` reports ``working``
with "Waiting for the person's approval on their phone: …" as the status message;
``tasks/result`` waits for the end and returns the ``CallToolResult`` (refusals included: the
task is ``completed`` and the result says ``isError``); ``tasks/cancel`` withdraws the request
on the daemon (the task is ``cancelled``); ``tasks/list`` lists this session's tasks.

Owns the task table (bounded, entries kept for their TTL) and the four handlers. It must not
start tasks for modern-era (2026-07-28) requests: that revision has no ``tasks/*`` methods.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    import anyio.abc
    import mcp_types

__all__ = ["RELATED_TASK", "TaskBook", "TaskRun"]

log = logging.getLogger("aegisd.mcp_shim")

RELATED_TASK: Final = "io.modelcontextprotocol/related-task"
MAX_TASKS: Final = 64
MIN_TTL_MS: Final = 10 * 60 * 1000  # longer than any approval (Auth0 allows at most 300 s)
MAX_TTL_MS: Final = 60 * 60 * 1000

Status = Literal["working", "input_required", "completed", "failed", "cancelled"]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class TaskRun:
    """One task: its state as ``tasks/get`` shows it, and its outcome once there is one."""

    task_id: str
    created: float
    ttl_ms: int
    poll_ms: int
    status: Status = "working"
    message: str | None = None
    updated: float = 0.0
    result: mcp_types.CallToolResult | None = None
    scope: Any = None  # the anyio CancelScope the call runs in
    done: Any = field(default=None)  # an anyio Event set when the task is terminal

    def set_message(self, message: str) -> None:
        self.message, self.updated = message, time.time()

    def info(self) -> dict[str, object]:
        task: dict[str, object] = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": _iso(self.created),
            "lastUpdatedAt": _iso(self.updated or self.created),
            "ttl": self.ttl_ms,
            "pollInterval": self.poll_ms,
        }
        if self.message:
            task["statusMessage"] = self.message
        return task


Runner = Callable[[TaskRun], Awaitable["mcp_types.CallToolResult"]]


class TaskBook:
    """This session's tasks. ``start`` needs the shim's long-lived task group."""

    def __init__(self, *, poll_ms: int = 1000, max_tasks: int = MAX_TASKS) -> None:
        self.poll_ms = poll_ms
        self.max_tasks = max_tasks
        self._tasks: dict[str, TaskRun] = {}
        self.group: anyio.abc.TaskGroup | None = None

    def capability(self) -> mcp_types.ServerTasksCapability:
        import mcp_types

        return mcp_types.ServerTasksCapability(
            list=mcp_types.TasksListCapability(),
            cancel=mcp_types.TasksCancelCapability(),
            requests=mcp_types.ServerTasksRequestsCapability(
                tools=mcp_types.TasksToolsCapability(call=mcp_types.TasksCallCapability())
            ),
        )

    def _forget_old(self, now: float) -> None:
        for task_id, run in list(self._tasks.items()):
            if run.status != "working" and now > run.created + run.ttl_ms / 1000:
                del self._tasks[task_id]

    def start(self, runner: Runner, ttl_ms: int | None, label: str) -> dict[str, object]:
        """Create a task running ``runner`` in the background; the ``CreateTaskResult``."""
        import anyio
        from mcp.shared.exceptions import MCPError
        from mcp_types import INVALID_REQUEST

        now = time.time()
        self._forget_old(now)
        if len(self._tasks) >= self.max_tasks:
            finished = [r for r in self._tasks.values() if r.status != "working"]
            if not finished:
                raise MCPError(INVALID_REQUEST, f"at most {self.max_tasks} tasks at once")
            del self._tasks[min(finished, key=lambda r: r.created).task_id]
        if self.group is None:  # pragma: no cover - serve_stdio sets it before serving
            raise MCPError(INVALID_REQUEST, "tasks are not available")
        ttl = min(max(ttl_ms or 0, MIN_TTL_MS), MAX_TTL_MS)
        run = TaskRun(secrets.token_urlsafe(16), now, ttl, self.poll_ms)
        run.scope, run.done = anyio.CancelScope(), anyio.Event()
        self._tasks[run.task_id] = run

        async def drive() -> None:
            try:
                with run.scope:
                    run.result = await runner(run)
                    run.status, run.message = "completed", None
            except Exception:
                log.exception("task %s for %s failed", run.task_id[:8], label)
                run.status, run.message = "failed", "aegis-mcp failed internally"
            finally:
                if run.scope.cancelled_caught:
                    log.info("task %s for %s cancelled", run.task_id[:8], label)
                    run.status, run.message = "cancelled", "cancelled by the client"
                run.updated = time.time()
                run.done.set()

        self.group.start_soon(drive)
        return {"task": run.info()}

    def _get(self, task_id: str) -> TaskRun:
        from mcp.shared.exceptions import MCPError
        from mcp_types import INVALID_PARAMS

        run = self._tasks.get(task_id)
        if run is None:
            raise MCPError(INVALID_PARAMS, "no such task (it may have expired)")
        return run

    # ---- the tasks/* handlers (ctx, params) -> result ------------------------------------

    async def on_get(self, ctx: object, params: mcp_types.GetTaskRequestParams) -> dict[str, Any]:
        return self._get(params.task_id).info()

    async def on_result(
        self, ctx: object, params: mcp_types.GetTaskPayloadRequestParams
    ) -> dict[str, Any]:
        from mcp.shared.exceptions import MCPError
        from mcp_types import INTERNAL_ERROR

        run = self._get(params.task_id)
        await run.done.wait()
        if run.result is None:
            raise MCPError(INTERNAL_ERROR, f"task {run.status}: {run.message or 'no result'}")
        dumped = run.result.model_dump(by_alias=True, mode="json", exclude_none=True)
        dumped["_meta"] = {**(dumped.get("_meta") or {}), RELATED_TASK: {"taskId": run.task_id}}
        return dumped

    async def on_cancel(
        self, ctx: object, params: mcp_types.CancelTaskRequestParams
    ) -> dict[str, Any]:
        from mcp.shared.exceptions import MCPError
        from mcp_types import INVALID_PARAMS

        run = self._get(params.task_id)
        if run.status != "working":
            raise MCPError(INVALID_PARAMS, f"task is already {run.status}")
        run.scope.cancel()
        await run.done.wait()
        return run.info()

    async def on_list(
        self, ctx: object, params: mcp_types.PaginatedRequestParams
    ) -> dict[str, Any]:
        self._forget_old(time.time())
        return {"tasks": [run.info() for run in self._tasks.values()]}
