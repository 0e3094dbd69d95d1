"""The Python SDK: ``AegisClient`` and ``with_async_authorization``.

Owns the client side of the socket protocol on anyio, so it runs under asyncio and trio:
connecting (``AEGIS_SOCKET`` or the default path), the handshake, several requests in flight
on one connection, ``Pending`` events, cancellation (a cancelled await sends ``Cancel``), and
raising the ``AegisError`` subclass named by each error code. It imports only the standard
library, anyio, msgspec and ``aegisd.wire``/``errors``/``locate``/``runtime_dir``: no httpx,
no mcp, so ``import aegisd.client`` stays light. It never keeps a credential after handing it
over.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol, TypeVar, cast

import anyio
import anyio.abc

from aegisd import locate, wire
from aegisd.errors import (
    AegisError,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalPending,
    ApprovalUnavailable,
    BadRequest,
    CallerNotAllowed,
    Cancelled,
    CredentialReflected,
    CredentialUnavailable,
    DaemonUnavailable,
    DaemonUntrusted,
    FrameTooLarge,
    Internal,
    InvalidParams,
    NotFound,
    PeerRejected,
    PolicyDenied,
    RateLimited,
    ShuttingDown,
    UnknownAction,
    UnsupportedProtocol,
    UpstreamError,
    error_for_code,
)

__all__ = [
    "AegisClient",
    "AegisError",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalPending",
    "ApprovalUnavailable",
    "BadRequest",
    "BlockingAegisClient",
    "CallerNotAllowed",
    "Cancelled",
    "CredentialReflected",
    "CredentialUnavailable",
    "Credentials",
    "DaemonUnavailable",
    "DaemonUntrusted",
    "FrameTooLarge",
    "Internal",
    "InvalidParams",
    "NotFound",
    "ParamsSpec",
    "PeerRejected",
    "PendingCallback",
    "PendingEvent",
    "PolicyDenied",
    "ProxyResult",
    "RateLimited",
    "ShuttingDown",
    "UnknownAction",
    "UnsupportedProtocol",
    "UpstreamError",
    "current_credentials",
    "default_socket",
    "with_async_authorization",
]

CLIENT_NAME: Final = "aegis-sdk"


def default_socket() -> Path:
    """``AEGIS_SOCKET``, else the runtime-dir socket if present, else ``/run/aegis/aegisd.sock``."""
    return locate.discover_socket()


# A single-use credential as the daemon sent it; ``repr`` never shows the token. The wire
# Struct itself, so the SDK and the protocol cannot drift apart.
Credentials = wire.Grant


@dataclass(frozen=True)
class ProxyResult:
    """The API's answer to a proxied request (the credential stayed in the daemon)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class PendingEvent:
    """The daemon started (or joined) a push: tell the person what to look for."""

    request_id: int
    binding_message: str
    expires_at: float
    digest: str


PendingCallback = Callable[[PendingEvent], Awaitable[None] | None]


async def _call_back(cb: PendingCallback | None, event: PendingEvent) -> None:
    if cb is None:
        return
    result = cb(event)
    if inspect.isawaitable(result):
        await result


@dataclass
class _Waiter:
    send: anyio.abc.ObjectSendStream[wire.DaemonMessage]
    receive: anyio.abc.ObjectReceiveStream[wire.DaemonMessage]


@dataclass
class AegisClient:
    """A connection to aegisd.

    Use as ``async with AegisClient() as c:``. Several requests may run concurrently on one
    client. Cancelling an awaiting ``authorize``/``proxy`` withdraws the request (and, when it
    was the only one waiting, the push on the phone).

    Args:
        socket: the daemon's socket; default ``AEGIS_SOCKET`` or the platform default.
        on_pending: called with a ``PendingEvent`` whenever a request waits for approval.
        connect_timeout: seconds for connect + handshake.
    """

    socket: str | os.PathLike[str] | None = None
    on_pending: PendingCallback | None = None
    connect_timeout: float = 5.0
    client_name: str = CLIENT_NAME
    peer: wire.PeerInfo | None = field(default=None, init=False)
    daemon_version: str = field(default="", init=False)
    policy_generation: int = field(default=0, init=False)  # as of the handshake
    _stream: anyio.abc.SocketStream | None = field(default=None, init=False, repr=False)
    _tg: anyio.abc.TaskGroup | None = field(default=None, init=False, repr=False)
    _waiters: dict[int, _Waiter] = field(default_factory=dict, init=False, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), init=False)
    _send_lock: anyio.Lock | None = field(default=None, init=False, repr=False)
    _closed_error: AegisError | None = field(default=None, init=False, repr=False)
    _reader: wire.FrameReader = field(default_factory=wire.FrameReader, init=False, repr=False)

    @property
    def socket_path(self) -> Path:
        return Path(self.socket).expanduser() if self.socket else default_socket()

    # ---- connection ----------------------------------------------------------------------

    async def __aenter__(self) -> AegisClient:
        path = self.socket_path
        self._send_lock = anyio.Lock()
        try:
            with anyio.fail_after(self.connect_timeout):
                self._stream = await anyio.connect_unix(path)
                # before a single byte goes out: is it aegisd's account listening there?
                raw = self._stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610
                locate.check_server(raw, path)
                with suppress(DaemonUnavailable):
                    # the daemon may have answered and closed already (rate_limited at its
                    # connection cap): its Error is still there to read
                    await self._send(wire.Hello(protocol=wire.PROTOCOL, client=self.client_name))
                first = await self._read_message()
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as exc:
            await self._close_stream()
            raise DaemonUnavailable(
                f"aegisd is not running at {path} (start it with `aegisd` or "
                "`aegisctl service install`)"
            ) from exc
        except TimeoutError as exc:
            await self._close_stream()
            raise DaemonUnavailable(f"aegisd at {path} did not answer the handshake") from exc
        except OSError as exc:
            await self._close_stream()
            raise DaemonUnavailable(f"cannot connect to {path}: {exc.strerror}") from exc
        except BaseException:
            await self._close_stream()
            raise
        if isinstance(first, wire.Error):
            await self._close_stream()
            raise error_for_code(first.code, first.message, first.retry_after)
        if not isinstance(first, wire.Welcome):
            await self._close_stream()
            raise BadRequest("daemon did not answer Hello with Welcome")
        self.peer, self.daemon_version = first.peer, first.daemon_version
        self.policy_generation = first.policy_generation
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_loop)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            await self._close_stream()

    async def _close_stream(self) -> None:
        if self._stream is not None:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
            self._stream = None

    async def _send(self, msg: wire.ClientMessage) -> None:
        if self._stream is None:
            raise self._closed_error or DaemonUnavailable("the connection to aegisd is closed")
        data = wire.encode(msg)
        assert self._send_lock is not None
        async with self._send_lock:
            try:
                await self._stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise DaemonUnavailable("the connection to aegisd was lost") from exc

    async def _read_message(self) -> wire.DaemonMessage:
        assert self._stream is not None
        while True:
            body = self._reader.next_frame()
            if body is not None:
                return wire.decode_daemon(body)
            try:
                data = await self._stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
                raise DaemonUnavailable("aegisd closed the connection") from exc
            self._reader.feed(data)

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await self._read_message()
                req_id = getattr(msg, "id", None)
                if req_id is None:
                    # a connection-level error: every waiter gets it, the connection ends
                    assert isinstance(msg, wire.Error)
                    self._closed_error = error_for_code(msg.code, msg.message, msg.retry_after)
                    break
                waiter = self._waiters.get(req_id)
                if waiter is not None:
                    await waiter.send.send(msg)
        except AegisError as exc:
            self._closed_error = exc
        finally:
            for waiter in list(self._waiters.values()):
                await waiter.send.aclose()

    # ---- requests ------------------------------------------------------------------------

    @asynccontextmanager
    async def _exchange(self, msg: wire.ClientMessage) -> AsyncIterator[_Waiter]:
        req_id = getattr(msg, "id")  # noqa: B009 - every request message has an id
        send, receive = anyio.create_memory_object_stream[wire.DaemonMessage](math.inf)
        waiter = _Waiter(send, receive)
        self._waiters[req_id] = waiter
        try:
            await self._send(msg)
            yield waiter
        finally:
            self._waiters.pop(req_id, None)
            send.close()
            receive.close()

    async def _final(
        self, waiter: _Waiter, req_id: int, on_pending: PendingCallback | None
    ) -> wire.DaemonMessage:
        try:
            while True:
                try:
                    msg = await waiter.receive.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    raise self._closed_error or DaemonUnavailable(
                        "aegisd closed the connection"
                    ) from None
                if isinstance(msg, wire.Pending):
                    event = PendingEvent(req_id, msg.binding_message, msg.expires_at, msg.digest)
                    await _call_back(on_pending or self.on_pending, event)
                    continue
                if isinstance(msg, wire.Error):
                    raise error_for_code(msg.code, msg.message, msg.retry_after, msg.expires_at)
                return msg
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0), suppress(AegisError):
                await self._send(wire.Cancel(id=req_id))
            raise

    async def _simple(self, msg: wire.ClientMessage) -> wire.DaemonMessage:
        async with self._exchange(msg) as waiter:
            return await self._final(waiter, getattr(msg, "id"), None)  # noqa: B009

    async def authorize(
        self,
        action: str,
        *,
        on_pending: PendingCallback | None = None,
        claim: bytes | None = None,
        max_wait: float | None = None,
        **params: str,
    ) -> Credentials:
        """Ask for a credential for ``action``; waits through the approval if one is needed.

        With ``claim`` (random bytes you keep, e.g. ``secrets.token_bytes(32)``) and
        ``max_wait`` seconds, a still-pending approval ends the call with ``ApprovalPending``
        and stays alive in the daemon: calling again with the same claim and arguments
        re-attaches to it (no second push).

        Raises:
            AegisError: the subclass named by the daemon's error code (``ApprovalDenied``,
                ``ApprovalPending``…).
        """
        return await self.authorize_params(
            action, params, on_pending=on_pending, claim=claim, max_wait=max_wait
        )

    async def authorize_params(
        self,
        action: str,
        params: Mapping[str, object],
        *,
        on_pending: PendingCallback | None = None,
        claim: bytes | None = None,
        max_wait: float | None = None,
    ) -> Credentials:
        """``authorize`` with the action's parameters as a mapping (for tool adapters)."""
        req_id = next(self._ids)
        msg = wire.Authorize(
            id=req_id,
            action=action,
            params={k: str(v) for k, v in params.items()},
            claim=claim,
            max_wait=max_wait,
        )
        async with self._exchange(msg) as waiter:
            final = await self._final(waiter, req_id, on_pending)
        if not isinstance(final, wire.Granted):
            raise BadRequest(f"unexpected answer {type(final).__name__} to authorize")
        return final.grant

    async def proxy(
        self,
        action: str,
        *,
        body: bytes | str | None = None,
        on_pending: PendingCallback | None = None,
        claim: bytes | None = None,
        max_wait: float | None = None,
        **params: str,
    ) -> ProxyResult:
        """Have the daemon make the action's one HTTP request; returns only the API's answer.

        ``claim`` and ``max_wait`` as in ``authorize``.
        """
        return await self.proxy_params(
            action, params, body=body, on_pending=on_pending, claim=claim, max_wait=max_wait
        )

    async def proxy_params(
        self,
        action: str,
        params: Mapping[str, object],
        *,
        body: bytes | str | None = None,
        on_pending: PendingCallback | None = None,
        claim: bytes | None = None,
        max_wait: float | None = None,
    ) -> ProxyResult:
        """``proxy`` with the action's parameters as a mapping (for tool adapters)."""
        req_id = next(self._ids)
        raw = body.encode() if isinstance(body, str) else body
        msg = wire.Proxy(
            id=req_id,
            action=action,
            params={k: str(v) for k, v in params.items()},
            body=raw,
            claim=claim,
            max_wait=max_wait,
        )
        async with self._exchange(msg) as waiter:
            final = await self._final(waiter, req_id, on_pending)
        if not isinstance(final, wire.ProxyResponse):
            raise BadRequest(f"unexpected answer {type(final).__name__} to proxy")
        return ProxyResult(final.status, dict(final.headers), final.body)

    async def list_actions(self) -> list[wire.ActionInfo]:
        final = await self._simple(wire.ListActions(id=next(self._ids)))
        if not isinstance(final, wire.Actions):
            raise BadRequest("unexpected answer to list_actions")
        return final.actions

    async def status(self) -> wire.StatusReport:
        final = await self._simple(wire.Status(id=next(self._ids)))
        if not isinstance(final, wire.StatusReport):
            raise BadRequest("unexpected answer to status")
        return final

    async def watch_policy(self, on_change: Callable[[int], Awaitable[None]]) -> None:
        """Call ``on_change(generation)`` now and after every policy reload, until cancelled.

        Returns never; raises ``DaemonUnavailable`` when the daemon goes away (or the error
        the daemon ended the watch with, e.g. ``ShuttingDown``).
        """
        req_id = next(self._ids)
        async with self._exchange(wire.Watch(id=req_id)) as waiter:
            try:
                while True:
                    try:
                        msg = await waiter.receive.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        raise self._closed_error or DaemonUnavailable(
                            "aegisd closed the connection"
                        ) from None
                    if isinstance(msg, wire.Error):
                        raise error_for_code(msg.code, msg.message, msg.retry_after)
                    if isinstance(msg, wire.PolicyChanged):
                        await on_change(msg.generation)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    with suppress(AegisError):
                        await self._send(wire.Cancel(id=req_id))
                raise

    async def pending(self) -> list[wire.PendingInfo]:
        final = await self._simple(wire.ListPending(id=next(self._ids)))
        if not isinstance(final, wire.PendingList):
            raise BadRequest("unexpected answer to pending")
        return final.pending

    async def cancel_pending(self, pending_id: str) -> None:
        await self._simple(wire.CancelPending(id=next(self._ids), pending_id=pending_id))

    async def lock(self) -> wire.Locked:
        final = await self._simple(wire.Lock(id=next(self._ids)))
        if not isinstance(final, wire.Locked):
            raise BadRequest("unexpected answer to lock")
        return final

    # operator and policy requests (aegisctl reload, policy show, policy propose)

    async def reload(self) -> wire.Reloaded:
        final = await self._simple(wire.Reload(id=next(self._ids)))
        if not isinstance(final, wire.Reloaded):
            raise BadRequest("unexpected answer to reload")
        return final

    async def show_policy(self) -> wire.PolicyText:
        final = await self._simple(wire.ShowPolicy(id=next(self._ids)))
        if not isinstance(final, wire.PolicyText):
            raise BadRequest("unexpected answer to show_policy")
        return final

    async def propose_policy(
        self, text: str, *, on_pending: PendingCallback | None = None
    ) -> wire.PolicyResult:
        """Send a new policy; waits through the approval on the phone."""
        req_id = next(self._ids)
        async with self._exchange(wire.ProposePolicy(id=req_id, text=text)) as waiter:
            final = await self._final(waiter, req_id, on_pending)
        if not isinstance(final, wire.PolicyResult):
            raise BadRequest("unexpected answer to propose_policy")
        return final


class BlockingAegisClient:
    """A small blocking wrapper for sync code: each call opens one connection.

    Not for use inside a running event loop (it calls ``anyio.run``).
    """

    def __init__(self, socket: str | os.PathLike[str] | None = None) -> None:
        self.socket = socket

    def _run(self, fn: Callable[[AegisClient], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            async with AegisClient(self.socket) as c:
                return await fn(c)

        return anyio.run(main)

    def authorize(self, action: str, **params: str) -> Credentials:
        result: Credentials = self._run(lambda c: c.authorize_params(action, params))
        return result

    def proxy(self, action: str, *, body: bytes | str | None = None, **params: str) -> ProxyResult:
        result: ProxyResult = self._run(lambda c: c.proxy_params(action, params, body=body))
        return result

    def status(self) -> wire.StatusReport:
        result: wire.StatusReport = self._run(lambda c: c.status())
        return result

    def list_actions(self) -> list[wire.ActionInfo]:
        result: list[wire.ActionInfo] = self._run(lambda c: c.list_actions())
        return result


# ---- the decorator -----------------------------------------------------------------------
#
# ``with_async_authorization`` turns "ask aegisd, wait for the phone, use the token once" into
# one line above a tool function. Rules it keeps:
#   * mcp is never imported here at module level: an MCP ``Context`` argument is recognised by
#     its type's module and its ``report_progress`` method, and the one mcp import (to build an
#     ``isError`` result) happens only inside a call that already received such a Context.
#   * the credential lives only for the duration of the wrapped call: it is passed as a keyword
#     argument and set in a ContextVar that is reset when the call ends; no module or closure
#     state ever holds it.

_CURRENT_CREDENTIALS: Final[contextvars.ContextVar[Credentials | None]] = contextvars.ContextVar(
    "aegis_current_credentials", default=None
)

ParamsSpec = (
    str | Sequence[str] | Mapping[str, str] | Callable[[Mapping[str, object]], Mapping[str, object]]
)
"""How a decorated tool's arguments become the action's parameters (see the decorator)."""

_R = TypeVar("_R")


def current_credentials() -> Credentials:
    """The credential of the innermost ``@with_async_authorization`` call now running.

    Raises:
        LookupError: called outside a decorated call (the credential is gone once it returns).
    """
    creds = _CURRENT_CREDENTIALS.get()
    if creds is None:
        raise LookupError(
            "no Aegis credential here: current_credentials() works only inside a function "
            "decorated with @with_async_authorization, while it runs"
        )
    return creds


class _ProgressContext(Protocol):
    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None: ...


def _mcp_context(arguments: Mapping[str, object]) -> _ProgressContext | None:
    """The MCP SDK ``Context`` among the call's arguments, found without importing mcp."""
    for value in arguments.values():
        module = type(value).__module__
        if (module == "mcp" or module.startswith("mcp.")) and callable(
            getattr(value, "report_progress", None)
        ):
            return cast(_ProgressContext, value)
    return None


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _spec_names(params: ParamsSpec | None) -> list[str]:
    """Argument names a names/mapping spec refers to (for the decoration-time check)."""
    if params is None or callable(params):
        return []
    if isinstance(params, str):
        return [params]
    if isinstance(params, Mapping):
        return list(params.values())
    return list(params)


def _action_params(params: ParamsSpec | None, arguments: Mapping[str, object]) -> dict[str, str]:
    raw: Mapping[str, object]
    if params is None:
        return {}
    if isinstance(params, str):
        raw = {params: arguments.get(params)}
    elif isinstance(params, Mapping):
        raw = {name: arguments.get(arg) for name, arg in params.items()}
    elif callable(params):
        raw = params(MappingProxyType(dict(arguments)))
    else:
        raw = {name: arguments.get(name) for name in params}
    # None means "not given": the daemon then reports the missing parameter (InvalidParams)
    return {str(k): _param_text(v) for k, v in raw.items() if v is not None}


def _visible_signature(fn: Callable[..., object], hidden: str | None) -> inspect.Signature:
    """``fn``'s signature without the injected parameter, annotations evaluated if possible.

    MCPServer reads ``__signature__`` as is (it does not evaluate strings found there), so
    string annotations from ``from __future__ import annotations`` are resolved here, in the
    function's own module; when that fails (a forward reference) the raw ones are kept.
    """
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        sig = inspect.signature(fn)
    if hidden is None:
        return sig
    return sig.replace(parameters=[p for p in sig.parameters.values() if p.name != hidden])


def _flat_arguments(bound: inspect.BoundArguments) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(cast(dict[str, object], value))
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[name] = value
    return out


def _tool_error_result(exc: AegisError) -> object:
    """The same ``isError`` result aegis-mcp returns; only called with mcp already imported."""
    from aegisd.mcp_results import error_result

    return error_result(exc)


def with_async_authorization(
    action: str,
    *,
    params: ParamsSpec | None = None,
    socket: str | os.PathLike[str] | None = None,
    on_pending: PendingCallback | None = None,
    inject: str | None = "credentials",
    errors: Literal["auto", "raise"] = "auto",
) -> Callable[[Callable[..., Awaitable[_R]]], Callable[..., Awaitable[_R]]]:
    """Decorate an async tool so each call first gets a single-use credential from aegisd.

    On every call the wrapper connects to aegisd, sends ``Authorize(action, params)`` and
    waits, through the phone approval if the policy asks for one, then calls the function
    with the credential. The credential is handed over in two ways:

    * as the keyword argument named by ``inject`` (default ``credentials``) when the function
      declares a parameter of that name; that parameter is removed from the wrapper's
      ``__signature__``, so MCPServer's input schema never shows it;
    * through ``current_credentials()``, a ContextVar set for the duration of the call.

    Once the function returns (or raises) the ContextVar is reset and the wrapper drops its
    references; nothing else keeps the credential. Every call opens its own connection, so
    cancelling the call (an MCP client's cancel, a timeout) withdraws the pending approval.

    Works under asyncio and trio (anyio), on plain async functions and on ``MCPServer``
    tools. When one of the call's arguments is the MCP SDK's ``Context`` (MCPServer passes it
    to a parameter annotated ``Context``), pending approvals are reported as MCP progress
    ("Approve on your phone: <binding message>"), and, with ``errors="auto"``, a refusal is
    returned as an ``isError`` ``CallToolResult`` with ``structuredContent.error.code`` (the
    shape aegis-mcp uses) instead of being raised.

    Args:
        action: the policy action to authorize; it must have ``delivery = "token"`` (proxy
            actions keep their credential inside aegisd: call ``AegisClient.proxy`` instead).
        params: how the tool's arguments become the action's parameters: an argument name or a
            list of them (same names), a mapping ``{action_param: argument_name}``, or a
            callable that receives all arguments (defaults applied) as a read-only mapping and
            returns ``{action_param: value}``. Values are sent as text (``bool`` as
            ``true``/``false``); a ``None`` value is left out. ``None``: no parameters.
        socket: the daemon's socket; default ``AEGIS_SOCKET`` or the platform default.
        on_pending: called with each ``PendingEvent`` (sync or async callable).
        inject: the keyword argument that receives the ``Credentials``; ``None`` to rely on
            ``current_credentials()`` only.
        errors: ``"auto"`` returns an ``isError`` result inside MCP tools and raises
            elsewhere; ``"raise"`` always raises the ``AegisError``.

    Raises:
        TypeError: at decoration time, when the function is not ``async def`` or ``params``
            names an argument the function does not have.
        AegisError: at call time, the subclass for the daemon's refusal (``ApprovalDenied``,
            ``ApprovalExpired``, ``DaemonUnavailable``, …), unless returned as described.
    """

    def decorate(fn: Callable[..., Awaitable[_R]]) -> Callable[..., Awaitable[_R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@with_async_authorization needs an async function, not {fn!r}")
        full = inspect.signature(fn)
        hidden = inject if inject is not None and inject in full.parameters else None
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in full.parameters.values())
        unknown = [n for n in _spec_names(params) if n not in full.parameters or n == hidden]
        if unknown and not takes_any:
            raise TypeError(
                f"@with_async_authorization(params=...) names {unknown} but "
                f"{fn.__qualname__} has no such parameter"
            )
        visible = _visible_signature(fn, hidden)

        @functools.wraps(fn)
        async def wrapper(*args: object, **kwargs: object) -> _R:
            bound = visible.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = _flat_arguments(bound)
            ctx = _mcp_context(arguments)
            steps = 0

            async def pending(event: PendingEvent) -> None:
                nonlocal steps
                await _call_back(on_pending, event)
                if ctx is not None:
                    steps += 1
                    with suppress(Exception):  # progress is a courtesy, never fatal
                        await ctx.report_progress(
                            steps, None, f"Approve on your phone: {event.binding_message}"
                        )

            try:
                async with AegisClient(socket) as client:
                    creds: Credentials | None = await client.authorize_params(
                        action, _action_params(params, arguments), on_pending=pending
                    )
            except AegisError as exc:
                if ctx is not None and errors == "auto":
                    return cast(_R, _tool_error_result(exc))
                raise
            token = _CURRENT_CREDENTIALS.set(creds)
            try:
                if hidden is not None:
                    kwargs[hidden] = creds
                return await fn(*args, **kwargs)
            finally:
                _CURRENT_CREDENTIALS.reset(token)
                kwargs.pop(hidden or "", None)
                creds = None  # single use: no reference survives the call

        # MCPServer builds the input schema from __signature__; get_type_hints() (used to find
        # the Context parameter) reads __annotations__ and the wrapped function's globals.
        wrapper.__signature__ = visible  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != hidden
        }
        return wrapper

    return decorate
