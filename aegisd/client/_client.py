"""``AegisClient``: the client side of the socket protocol, on anyio (asyncio and trio).

Owns connecting (``AEGIS_SOCKET`` or the located default, checking who serves it), the
handshake, several requests in flight on one connection, ``Pending`` events, cancellation (a
cancelled await sends ``Cancel``), and raising the ``AegisError`` subclass named by each error
code. It imports only the standard library, anyio, msgspec and ``aegisd.wire``/``errors``/
``locate``/``runtime_dir``: no httpx, no mcp. It never keeps a credential after handing it
over, and knows nothing of the decorator (``_decorator`` builds on it).
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aegisd import locate, wire
from aegisd.errors import (
    AegisError,
    BadRequest,
    DaemonUnavailable,
    error_for_code,
)

__all__ = [
    "CLIENT_NAME",
    "AegisClient",
    "BlockingAegisClient",
    "Credentials",
    "PendingCallback",
    "PendingEvent",
    "ProxyResult",
    "default_socket",
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
    send: MemoryObjectSendStream[wire.DaemonMessage]
    receive: MemoryObjectReceiveStream[wire.DaemonMessage]


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
    _reading: bool = field(default=False, init=False, repr=False)  # the read loop runs
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
        self._reading = True
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
                    self._closed_error = (
                        error_for_code(msg.code, msg.message, msg.retry_after)
                        if isinstance(msg, wire.Error)
                        else DaemonUnavailable("aegisd sent an answer that belongs to no request")
                    )
                    break
                waiter = self._waiters.get(req_id)
                if waiter is not None:
                    # no checkpoint between the lookup and the delivery: a request that ended
                    # meanwhile would have closed its stream. An answer for a request that has
                    # already ended (a stray, a duplicate) has no one to go to: drop it.
                    with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                        waiter.send.send_nowait(msg)
        except AegisError as exc:
            self._closed_error = exc
        finally:
            # nothing reads answers any more: later requests must fail at once, not wait
            self._reading = False
            for waiter in list(self._waiters.values()):
                await waiter.send.aclose()

    # ---- requests ------------------------------------------------------------------------

    @asynccontextmanager
    async def _exchange(self, msg: wire.ClientMessage) -> AsyncIterator[_Waiter]:
        req_id = getattr(msg, "id")  # noqa: B009 - every request message has an id
        send, receive = anyio.create_memory_object_stream[wire.DaemonMessage](math.inf)
        waiter = _Waiter(send, receive)
        if not self._reading:
            send.close()
            receive.close()
            raise self._closed_error or DaemonUnavailable("the connection to aegisd is closed")
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
        """The pending approvals this connection may see (``list_pending`` says whose)."""
        return (await self.list_pending()).pending

    async def list_pending(self) -> wire.PendingList:
        """Pending approvals with their ``scope``: ``all`` for an operator, ``own`` (this
        process's) for another caller, ``none`` when no caller rule matches, and a ``note``."""
        final = await self._simple(wire.ListPending(id=next(self._ids)))
        if not isinstance(final, wire.PendingList):
            raise BadRequest("unexpected answer to pending")
        return final

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
