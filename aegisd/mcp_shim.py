"""``aegis-mcp``: the MCP stdio server an agent launches to reach aegisd.

Owns the translation between MCP and the aegisd socket, on the official MCP SDK (v2, run on
trio). It uses the low-level ``Server`` rather than ``MCPServer`` because its tools are data,
not Python functions: the set changes with the policy at every ``tools/list``, and each input
schema is the policy's JSON Schema verbatim (patterns included), which MCPServer would
re-derive from a signature. Each action the daemon lists for this caller becomes a
tool (name from the action name, description, input schema from the policy's parameter
patterns); a call becomes a ``Proxy`` request whose pending approvals are reported as MCP
progress; the API's answer comes back as text plus ``structuredContent``; every refusal is an
``isError`` result carrying ``structuredContent.error.code`` (the stable wire codes).

What it must not do:

* hold or show a credential. It has none of its own and only ever sends ``Proxy`` requests,
  so a token never enters the model's context. Actions with ``delivery = "token"`` are not
  listed (they are for SDK callers: ``@with_async_authorization`` in your own tool), nor are
  actions the policy denies outright; calling one anyway gives ``unknown_action``.
* invent JSON-RPC error codes, or put tracebacks or exception text from foreign code in a
  result. Protocol errors stay for malformed MCP requests (the SDK answers those).
* fail to start when aegisd is down: it answers ``initialize`` and ``tools/list`` anyway, and
  lists a single ``aegis_status`` tool whose result says how to start the daemon; each call
  asks the daemon again, so starting it later is enough (``aegis_status`` then reports it and
  sends ``tools/list_changed`` on handshake-era connections).

Every call uses its own socket connection, so a client's cancellation (or stdin closing) ends
the request on the daemon, which withdraws the pending approval. The mcp package is imported
lazily: ``aegisd.client`` imports ``error_result`` from here only when mcp is already loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aegisd import wire
from aegisd.client import AegisClient, PendingEvent, ProxyResult
from aegisd.errors import AegisError, Internal, InvalidParams, PolicyDenied, UnknownAction

if TYPE_CHECKING:
    import mcp_types
    from mcp.server import Server
    from mcp.server.context import ServerRequestContext

__all__ = [
    "CLIENT_NAME",
    "STATUS_TOOL",
    "ActionTool",
    "Shim",
    "error_result",
    "main",
    "plan_tools",
    "proxy_result",
    "serve_stdio",
    "tool_name",
]

log = logging.getLogger("aegisd.mcp_shim")

CLIENT_NAME: Final = "aegis-mcp"
STATUS_TOOL: Final = "aegis_status"
KEEPALIVE_SECONDS: Final = 15.0
MAX_TOOL_NAME: Final = 64  # the strictest hosts allow ^[A-Za-z0-9_-]{1,64}$
_NOT_IN_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")
_INSTRUCTIONS: Final = (
    "These tools are actions brokered by aegisd, which holds the credentials. Some need the "
    "person's approval on their phone: such a call waits (reporting progress) until they "
    "approve or deny it. A refused call returns isError with structuredContent.error.code."
)


# ---- tools -------------------------------------------------------------------------------


def tool_name(action: str) -> str:
    """The MCP tool name for an action: ``demo.read`` → ``demo_read``.

    Characters outside ``[A-Za-z0-9_-]`` become ``_`` and the name is cut to 64 characters,
    which every host accepts (dots are legal in MCP 2025-11-25 but refused by some hosts).
    """
    return _NOT_IN_NAME.sub("_", action)[:MAX_TOOL_NAME] or "_"


@dataclass(frozen=True)
class ActionTool:
    """One exposed tool and the action behind it."""

    name: str
    action: wire.ActionInfo

    def description(self) -> str:
        text = self.action.description or f"aegisd action {self.action.name}"
        if self.action.approval == "ciba":
            text += " (needs the person's approval on their phone; the call waits for it)"
        return text

    def input_schema(self) -> dict[str, object]:
        schema = dict(self.action.params_schema)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        return schema


def plan_tools(actions: Iterable[wire.ActionInfo]) -> dict[str, ActionTool]:
    """Tools for the actions a caller may use: proxy delivery only, never ``approval = deny``.

    Names that collide after sanitising get a numeric suffix, in action-name order, so the
    mapping is stable for a given policy.
    """
    tools: dict[str, ActionTool] = {}
    for info in sorted(actions, key=lambda a: a.name):
        if info.delivery != "proxy" or info.approval == "deny":
            continue
        base = tool_name(info.name)
        name, n = base, 1
        while name in tools or name == STATUS_TOOL:
            n += 1
            suffix = f"_{n}"
            name = base[: MAX_TOOL_NAME - len(suffix)] + suffix
        tools[name] = ActionTool(name, info)
    return tools


# ---- results -----------------------------------------------------------------------------


def error_result(exc: AegisError) -> mcp_types.CallToolResult:
    """A refusal as the model sees it: ``isError`` with the stable code, no secrets."""
    import mcp_types

    error: dict[str, object] = {"code": exc.code, "message": exc.message}
    if exc.retry_after is not None:
        error["retry_after"] = exc.retry_after
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=f"{exc.code}: {exc.message}")],
        structured_content={"error": error},
        is_error=True,
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def proxy_result(result: ProxyResult) -> mcp_types.CallToolResult:
    """The API's answer: the body as text, and ``{status, headers, body}`` as structured content.

    ``body`` is the parsed JSON for a JSON response, else the text; a body that is not UTF-8
    is given as ``body_base64`` instead. A status of 400 or more is an ``isError`` result
    whose ``error.code`` is ``upstream_error``; the API's answer is still included.
    """
    import base64

    import mcp_types

    structured: dict[str, object] = {"status": result.status, "headers": dict(result.headers)}
    try:
        text: str | None = result.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        structured["body"] = None
        structured["body_base64"] = base64.b64encode(result.body).decode("ascii")
        shown = f"({len(result.body)} bytes of binary data, base64 in structuredContent)"
    else:
        body: object = text
        if text and _is_json(result.headers.get("content-type", "")):
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        structured["body"] = body
        shown = text
    failed = result.status >= 400
    if failed:
        structured["error"] = {
            "code": "upstream_error",
            "message": f"the API answered HTTP {result.status}",
        }
        shown = f"The API answered HTTP {result.status}." + (f"\n{shown}" if shown else "")
    elif not shown:
        shown = f"HTTP {result.status} (empty response)"
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=shown)],
        structured_content=structured,
        is_error=failed,
    )


def _split_arguments(
    action: wire.ActionInfo, arguments: Mapping[str, object]
) -> tuple[dict[str, str], bytes | None]:
    """Tool arguments → (action params as text, request body)."""
    params: dict[str, str] = {}
    body: bytes | None = None
    for key, value in arguments.items():
        if value is None:
            continue
        if key == "body" and action.body:
            text = value if isinstance(value, str) else json.dumps(value)
            body = text.encode("utf-8")
        elif isinstance(value, bool):
            params[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            params[key] = str(value)
        else:
            raise InvalidParams(f"parameter {key[:64]!r} must be a string")
    return params, body


# ---- the server --------------------------------------------------------------------------


class _Progress:
    """Turns the daemon's ``Pending`` events into MCP progress for one tool call."""

    def __init__(self, ctx: ServerRequestContext[object], keepalive: float) -> None:
        self._ctx = ctx
        self._keepalive = keepalive
        self._step = 0
        self.event: PendingEvent | None = None

    async def report(self, event: PendingEvent, *, remaining: bool = False) -> None:
        self._step += 1
        message = f"Approve on your phone: {event.binding_message}"
        if remaining:
            left = max(0, round(event.expires_at - time.time()))
            message += f" (expires in {left} s)"
        try:
            await self._ctx.session.report_progress(self._step, None, message)
        except Exception:  # progress is a courtesy: never let it end the approval
            log.debug("could not report progress", exc_info=True)

    async def on_pending(self, event: PendingEvent) -> None:
        self.event = event
        await self.report(event)

    async def keep_alive(self) -> None:
        """Repeat the progress while the person has not answered (hosts reset timeouts on it)."""
        import anyio

        while True:
            await anyio.sleep(self._keepalive)
            if self.event is not None:
                await self.report(self.event, remaining=True)


class Shim:
    """The shim's state for one MCP connection: which tools exist and how to reach aegisd.

    Args:
        socket: aegisd's socket; default ``AEGIS_SOCKET`` or the platform default.
        connect_timeout: seconds for each connection's connect and handshake.
        keepalive: seconds between repeated progress messages while an approval is pending.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        connect_timeout: float = 5.0,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.socket = socket
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.tools: dict[str, ActionTool] = {}
        self.problem: AegisError | None = None

    def _client(self) -> AegisClient:
        return AegisClient(
            self.socket, connect_timeout=self.connect_timeout, client_name=CLIENT_NAME
        )

    async def refresh(self) -> dict[str, ActionTool]:
        """Ask aegisd for this caller's actions; on failure remember why (``problem``)."""
        try:
            async with self._client() as client:
                actions = await client.list_actions()
        except AegisError as exc:
            if self.problem is None or self.problem.code != exc.code:
                log.warning("cannot list actions from aegisd: %s (%s)", exc.message, exc.code)
            self.problem, self.tools = exc, {}
            return self.tools
        if self.problem is not None or not self.tools:
            log.info("aegisd offers %d tool(s)", len(plan_tools(actions)))
        self.problem, self.tools = None, plan_tools(actions)
        return self.tools

    # ---- handlers ------------------------------------------------------------------------

    async def list_tools(
        self,
        ctx: ServerRequestContext[object],
        params: mcp_types.PaginatedRequestParams | None,
    ) -> mcp_types.ListToolsResult:
        import mcp_types

        tools = await self.refresh()
        listed = [
            mcp_types.Tool(
                name=tool.name, description=tool.description(), input_schema=tool.input_schema()
            )
            for tool in tools.values()
        ]
        if self.problem is not None:
            listed = [
                mcp_types.Tool(
                    name=STATUS_TOOL,
                    description=(
                        f"aegisd cannot be used right now ({self.problem.code}: "
                        f"{self.problem.message}). Call this tool to check again once it "
                        "has been fixed."
                    ),
                    input_schema={"type": "object", "properties": {}},
                )
            ]
        return mcp_types.ListToolsResult(tools=listed)

    async def call_tool(
        self,
        ctx: ServerRequestContext[object],
        params: mcp_types.CallToolRequestParams,
    ) -> mcp_types.CallToolResult:
        try:
            if params.name == STATUS_TOOL:
                return await self._status(ctx)
            return await self._call(ctx, params.name, params.arguments or {})
        except AegisError as exc:
            log.info("tool %r refused: %s", params.name[:64], exc.code)
            return error_result(exc)
        except Exception:
            # Our own bug: say so without its text (it could quote anything).
            log.exception("tool %r failed", params.name[:64])
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
        self, ctx: ServerRequestContext[object], name: str, arguments: Mapping[str, object]
    ) -> mcp_types.CallToolResult:
        import anyio

        tool = await self._lookup(name)
        if tool.action.delivery != "proxy":  # pragma: no cover - plan_tools never lists them
            raise PolicyDenied("aegis-mcp never hands tokens to the model")
        params, body = _split_arguments(tool.action, arguments)
        progress = _Progress(ctx, self.keepalive)
        outcome: ProxyResult | AegisError
        async with anyio.create_task_group() as tg:

            async def on_pending(event: PendingEvent) -> None:
                first = progress.event is None
                await progress.on_pending(event)
                if first:
                    tg.start_soon(progress.keep_alive)

            try:
                async with self._client() as client:
                    outcome = await client.proxy_params(
                        tool.action.name, params, body=body, on_pending=on_pending
                    )
            except AegisError as exc:
                outcome = exc
            tg.cancel_scope.cancel()
        if isinstance(outcome, AegisError):
            raise outcome
        log.info("tool %r: HTTP %d", name, outcome.status)
        return proxy_result(outcome)

    async def _status(self, ctx: ServerRequestContext[object]) -> mcp_types.CallToolResult:
        import mcp_types
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        tools = await self.refresh()
        if self.problem is not None:
            raise self.problem
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            try:
                await ctx.session.send_tool_list_changed()
            except Exception:  # best effort: the answer below says what to do anyway
                log.debug("could not send tools/list_changed", exc_info=True)
        text = (
            f"aegisd is running and offers {len(tools)} tool(s): "
            f"{', '.join(sorted(tools)) or 'none'}. Reload the tool list to use them."
        )
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=text)],
            structured_content={"status": "ok", "tools": sorted(tools)},
        )

    def build_server(self) -> Server[object]:
        """The low-level MCP ``Server`` answering with this shim's handlers."""
        from importlib.metadata import PackageNotFoundError, version

        from mcp.server import Server

        try:
            ver = version("aegis")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            ver = "0.0.0+unknown"
        return Server(
            "aegis-mcp",
            version=ver,
            instructions=_INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )


async def serve_stdio(shim: Shim) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    import anyio
    from mcp.server.lowlevel.server import NotificationOptions
    from mcp.server.stdio import stdio_server

    server = shim.build_server()
    options = server.create_initialization_options(NotificationOptions(tools_changed=True))
    async with anyio.create_task_group() as tg:
        tg.start_soon(shim.refresh)  # at start: log what aegisd offers (or why it can't)
        async with stdio_server() as (read, write):
            await server.run(read, write, options)
        tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    """``aegis-mcp [--socket PATH]``: run the shim on trio until stdin closes."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="aegis-mcp",
        description="MCP stdio server exposing the aegisd actions this caller may use.",
    )
    parser.add_argument(
        "--socket", help="aegisd's socket (default: $AEGIS_SOCKET or the platform default)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="aegis-mcp[%(process)d] %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(args.log_level.upper())

    import trio

    try:
        trio.run(serve_stdio, Shim(args.socket))
    except KeyboardInterrupt:
        sys.exit(130)
