"""The shim's MCP server: one stdio session, its handlers, and ``main``.

Owns the session state (the current tool plan, the claims, the tasks, the policy watcher)
and the MCP handlers on the SDK's low-level ``Server``, run on trio: ``tools/list``,
``tools/call``, ``subscriptions/listen`` (2026-07-28) and ``tasks/*`` (2025-11-25). A call
becomes one ``Proxy`` request on its own socket connection; a pending approval is reported
as MCP progress, and when ``--max-wait`` passes first the call returns ``approval_pending``
(handshake era) or an ``input_required`` result that the client retries by itself (2026-07-28);
either way the repeated call re-attaches to the same approval with its claim.

It must not hold or show a credential (it only sends ``Proxy`` requests), invent JSON-RPC
error codes, or put foreign exception text into a result.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aegisd.client import AegisClient, PendingEvent
from aegisd.errors import AegisError, ApprovalPending, Internal, PolicyDenied, UnknownAction
from aegisd.host_schema import STATUS_TOOL
from aegisd.mcp_results import error_result, pending_result, proxy_result
from aegisd.mcp_shim.claims import ClaimBook, claim_key
from aegisd.mcp_shim.progress import KEEPALIVE_SECONDS, Progress, TaskProgress
from aegisd.mcp_shim.tasks import TaskBook, TaskRun
from aegisd.mcp_shim.tools import ActionTool, plan_tools, split_arguments, status_tool
from aegisd.mcp_shim.tools import tools_signature as _signature

if TYPE_CHECKING:
    import mcp_types
    from mcp.server import Server
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
    from mcp.server.session import ServerSession

__all__ = ["CLIENT_NAME", "DEFAULT_MAX_WAIT", "Shim", "serve_stdio"]

log = logging.getLogger("aegisd.mcp_shim")

CLIENT_NAME: Final = "aegis-mcp"
DEFAULT_MAX_WAIT: Final = 45.0  # below every host's fixed cap (about 60 s)
_INSTRUCTIONS: Final = (
    "These tools are actions brokered by aegisd, which holds the credentials. Some need the "
    "person's approval on their phone: such a call waits (reporting progress) until they "
    "answer. If it returns approval_pending, the approval is still open: call the same tool "
    "again with exactly the same arguments to continue. A refused call returns isError with "
    "structuredContent.error.code."
)


@dataclass(frozen=True)
class _Waiting:
    """A call that ended at ``--max-wait`` with the approval still open."""

    binding_message: str
    expires_at: float
    retry_after: float


def _modern(ctx: ServerRequestContext[Any]) -> bool:
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


class Shim:
    """The shim's state for one MCP session: which tools exist and how to reach aegisd.

    Args:
        socket: aegisd's socket; default ``AEGIS_SOCKET`` or the platform default.
        connect_timeout: seconds for each connection's connect and handshake.
        keepalive: seconds between repeated progress messages while an approval is pending.
        max_wait: seconds a call waits for an approval before answering ``approval_pending``
            (``None``: until the approval ends).
        watch_retry: seconds between attempts to reach a daemon that went away (doubling to
            ten times that).
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        connect_timeout: float = 5.0,
        keepalive: float = KEEPALIVE_SECONDS,
        max_wait: float | None = DEFAULT_MAX_WAIT,
        watch_retry: float = 0.5,
    ) -> None:
        from mcp.server.subscriptions import InMemorySubscriptionBus

        self.socket = socket
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.max_wait = max_wait
        self.watch_retry = watch_retry
        self.tools: dict[str, ActionTool] = {}
        self.problem: AegisError | None = None
        self.claims = ClaimBook()
        self.tasks = TaskBook()
        self._signature: str | None = None
        self._bus = InMemorySubscriptionBus()
        self._session: ServerSession | None = None  # the handshake-era session, once seen
        self._answered: Any = None  # an anyio Event: the first request has been answered

    def _client(self) -> AegisClient:
        return AegisClient(
            self.socket, connect_timeout=self.connect_timeout, client_name=CLIENT_NAME
        )

    # ---- the tool plan and list_changed --------------------------------------------------

    async def refresh(self, *, notify: bool = True) -> dict[str, ActionTool]:
        """Ask aegisd for this caller's actions; on failure remember why (``problem``).

        With ``notify``, a plan that differs from the previous one is announced to the host
        (``notifications/tools/list_changed``, or a ``subscriptions/listen`` event).
        """
        try:
            async with self._client() as client:
                actions = await client.list_actions()
        except AegisError as exc:
            if self.problem is None or self.problem.code != exc.code:
                log.warning("cannot list actions from aegisd: %s (%s)", exc.message, exc.code)
            self.problem, self.tools = exc, {}
        else:
            tools = plan_tools(actions)
            if self.problem is not None or self._signature is None:
                log.info("aegisd offers %d tool(s)", len(tools))
            self.problem, self.tools = None, tools
        signature = _signature(self.tools, self.problem.code if self.problem else None)
        changed = self._signature is not None and signature != self._signature
        self._signature = signature
        if changed and notify:
            log.info("the tool list changed: telling the host")
            await self.announce()
        return self.tools

    async def announce(self) -> None:
        """Tell the host to fetch the tool list again (both protocol eras)."""
        from mcp.server.subscriptions import ToolsListChanged

        await self._bus.publish(ToolsListChanged())
        if self._session is not None:
            try:
                await self._session.send_tool_list_changed()
            except Exception:  # best effort: the host may have gone
                log.debug("could not send tools/list_changed", exc_info=True)

    async def watch(self) -> None:
        """Follow the daemon's policy generation; re-plan on every change, loss and return."""
        import anyio

        delay = self.watch_retry
        if self._answered is not None:
            # start after the first answer (initialize): the host waits for that one, and on
            # a busy machine two more connections to the daemon would only delay it
            await self._answered.wait()

        async def on_change(generation: int) -> None:
            nonlocal delay
            delay = self.watch_retry
            log.debug("policy generation %d", generation)
            await self.refresh()

        while True:
            try:
                async with self._client() as client:
                    await client.watch_policy(on_change)
            except AegisError as exc:
                log.debug("policy watch ended: %s", exc.code)
            except Exception:  # our bug: keep serving the host with the last plan
                log.exception("the policy watch failed")
            await self.refresh()
            await anyio.sleep(delay)
            delay = min(delay * 2, self.watch_retry * 10)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The session's background work (policy watcher, tasks) for the ``with`` body."""
        import anyio

        self._answered = anyio.Event()
        async with anyio.create_task_group() as tg:
            self.tasks.group = tg
            tg.start_soon(self.watch)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                self.tasks.group = None

    # ---- handlers ------------------------------------------------------------------------

    async def middleware(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Remember the handshake-era session; start a task for a task-augmented call; say
        why the client cancelled a request (a host's own timeout names itself here)."""
        if ctx.method == "notifications/cancelled" and isinstance(ctx.params, Mapping):
            reason = str(ctx.params.get("reason") or "no reason given")[:120]
            log.warning(
                "the client cancelled request %s: %s", str(ctx.params.get("requestId"))[:32], reason
            )
        if not _modern(ctx):
            self._session = ctx.session
            params = ctx.params
            if (
                ctx.method == "tools/call"
                and isinstance(params, Mapping)
                and isinstance(params.get("task"), Mapping)
                and self.tasks.group is not None
            ):
                return self._start_task(params)
        try:
            return await call_next(ctx)
        finally:
            if self._answered is not None:
                self._answered.set()

    def _start_task(self, raw: Mapping[str, Any]) -> dict[str, object]:
        import mcp_types
        from mcp.shared.exceptions import MCPError
        from pydantic import ValidationError

        try:
            params = mcp_types.CallToolRequestParams.model_validate(raw, by_name=False)
        except ValidationError:
            raise MCPError(mcp_types.INVALID_PARAMS, "Invalid request parameters") from None
        name, arguments = params.name, dict(params.arguments or {})

        async def run(task: TaskRun) -> mcp_types.CallToolResult:
            if name == STATUS_TOOL:
                return await self._status_result()
            outcome = await self._guarded(name, arguments, TaskProgress(task), None)
            if isinstance(outcome, _Waiting):  # pragma: no cover - no max_wait for tasks
                return pending_result(outcome.binding_message, outcome.expires_at, 1.0)
            return outcome

        ttl = params.task.ttl if params.task is not None else None
        log.info("tool %r: running as a task", name[:64])
        return self.tasks.start(run, ttl, repr(name[:64]))

    async def list_tools(
        self,
        ctx: ServerRequestContext[Any],
        params: mcp_types.PaginatedRequestParams | None,
    ) -> mcp_types.ListToolsResult:
        import mcp_types

        tools = await self.refresh(notify=False)
        if self.problem is not None:
            listed = [status_tool(f"{self.problem.code}: {self.problem.message}")]
        else:
            tasks = not _modern(ctx)
            listed = [tool.as_mcp(tasks=tasks) for tool in tools.values()]
        return mcp_types.ListToolsResult(tools=listed)

    async def call_tool(
        self,
        ctx: ServerRequestContext[Any],
        params: mcp_types.CallToolRequestParams,
    ) -> mcp_types.CallToolResult | mcp_types.InputRequiredResult:
        import mcp_types

        if params.name == STATUS_TOOL:
            return await self._status_result()
        progress = Progress(ctx.session, self.keepalive)
        outcome = await self._guarded(
            params.name, dict(params.arguments or {}), progress, self.max_wait
        )
        if not isinstance(outcome, _Waiting):
            return outcome
        if _modern(ctx):
            # 2026-07-28: the client re-sends the call by itself (SEP-2322, state only); the
            # state is no secret: the claim stays here, keyed by the call's arguments
            return mcp_types.InputRequiredResult(request_state=f"approval:{outcome.expires_at}")
        return pending_result(outcome.binding_message, outcome.expires_at, outcome.retry_after)

    async def _guarded(
        self,
        name: str,
        arguments: dict[str, Any],
        progress: Progress,
        max_wait: float | None,
    ) -> mcp_types.CallToolResult | _Waiting:
        """``_call`` with every refusal as a result and every surprise hidden."""
        import anyio

        started = time.monotonic()
        try:
            return await self._call(name, arguments, progress, max_wait)
        except AegisError as exc:
            log.info("tool %r refused: %s", name[:64], exc.code)
            return error_result(exc)
        except anyio.get_cancelled_exc_class():
            # the host cancelled (its own timeout looks the same) or went away
            waited = time.monotonic() - started
            what = "while the approval was pending" if progress.event else "before an answer"
            log.warning(
                "tool %r: the client cancelled the call after %.1f s, %s",
                name[:64],
                waited,
                what,
            )
            raise
        except Exception:
            # Our own bug: say so without its text (it could quote anything).
            log.exception("tool %r failed", name[:64])
            return error_result(Internal("aegis-mcp failed internally (details on its stderr)"))

    async def _lookup(self, name: str) -> ActionTool:
        tool = self.tools.get(name)
        if tool is None:
            tool = (await self.refresh()).get(name)
        if tool is None:
            if self.problem is not None:
                raise self.problem
            raise UnknownAction(f"no tool named {name[:64]!r} (see tools/list)")
        return tool

    async def _call(
        self,
        name: str,
        arguments: dict[str, Any],
        progress: Progress,
        max_wait: float | None,
    ) -> mcp_types.CallToolResult | _Waiting:
        import anyio

        tool = await self._lookup(name)
        if tool.action.delivery != "proxy":  # pragma: no cover - plan_tools never lists them
            raise PolicyDenied("aegis-mcp never hands tokens to the model")
        params, body = split_arguments(tool.action, arguments)
        # keyed by what the daemon digests, so 5 and "5", or a null and an absent argument,
        # are the same call (and re-attach), as they are the same request to the daemon
        key = claim_key(name, {"params": params, "body": body.hex() if body else None})
        claim = self.claims.claim_for(key, time.time()) if tool.needs_approval else None
        outcome: Any
        async with anyio.create_task_group() as tg:

            async def on_pending(event: PendingEvent) -> None:
                first = progress.event is None
                await progress.on_pending(event)
                if first:
                    tg.start_soon(progress.keep_alive)

            try:
                async with self._client() as client:
                    outcome = await client.proxy_params(
                        tool.action.name,
                        params,
                        body=body,
                        claim=claim,
                        max_wait=max_wait if tool.needs_approval else None,
                        on_pending=on_pending,
                    )
            except AegisError as exc:
                outcome = exc
            tg.cancel_scope.cancel()
        if isinstance(outcome, ApprovalPending):
            binding = progress.event.binding_message if progress.event else ""
            expires_at = outcome.expires_at or time.time()
            self.claims.pending_until(key, expires_at, binding)
            log.info("tool %r: approval still pending after %s s", name[:64], max_wait)
            return _Waiting(
                self.claims.binding_message(key), expires_at, outcome.retry_after or 1.0
            )
        self.claims.drop(key)
        if isinstance(outcome, AegisError):
            raise outcome
        log.info("tool %r: HTTP %d", name[:64], outcome.status)
        return proxy_result(outcome.status, outcome.headers, outcome.body)

    async def _status_result(self) -> mcp_types.CallToolResult:
        try:
            return await self._status()
        except AegisError as exc:
            return error_result(exc)

    async def _status(self) -> mcp_types.CallToolResult:
        import mcp_types

        tools = await self.refresh()  # announces a change, and only a change
        if self.problem is not None:
            raise self.problem
        text = (
            f"aegisd is running and offers {len(tools)} tool(s): "
            f"{', '.join(sorted(tools)) or 'none'}."
        )
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=text)],
            structured_content={"status": "ok", "tools": sorted(tools)},
        )

    def build_server(self) -> Server[Any]:
        """The low-level MCP ``Server`` answering with this shim's handlers."""
        import mcp_types
        from mcp.server import Server
        from mcp.server.subscriptions import ListenHandler

        from aegisd.version import installed_version

        server: Server[Any] = Server(
            "aegis-mcp",
            version=installed_version(),
            title="Aegis",
            instructions=_INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_subscriptions_listen=ListenHandler(self._bus, max_subscriptions=16),
        )
        server.middleware.append(self.middleware)
        server.add_request_handler("tasks/get", mcp_types.GetTaskRequestParams, self.tasks.on_get)
        server.add_request_handler(
            "tasks/result", mcp_types.GetTaskPayloadRequestParams, self.tasks.on_result
        )
        server.add_request_handler(
            "tasks/cancel", mcp_types.CancelTaskRequestParams, self.tasks.on_cancel
        )
        server.add_request_handler(
            "tasks/list", mcp_types.PaginatedRequestParams, self.tasks.on_list
        )
        return server

    def initialization_options(self, server: Server[Any]) -> Any:
        """Handshake-era capabilities: ``tools.listChanged`` and ``tasks`` for tools/call."""
        from mcp.server.lowlevel.server import NotificationOptions

        options = server.create_initialization_options(NotificationOptions(tools_changed=True))
        options.capabilities.tasks = self.tasks.capability()
        return options


async def serve_stdio(shim: Shim) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    from mcp.server.stdio import stdio_server

    server = shim.build_server()
    options = shim.initialization_options(server)
    async with shim.running(), stdio_server() as (read, write):
        await server.run(read, write, options)
