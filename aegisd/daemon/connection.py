"""One client connection: handshake, peer check, framing, concurrent requests, timeouts.

Owns the per-connection protocol of DESIGN §2: peer identification and the uid check before
anything is read, admission right after it (``Host.admit``, see ``conn_limits.py``), the
``Hello``/``Welcome`` handshake under one deadline, an idle timeout while nothing is in flight
(the short ``unmatched_idle_timeout`` for a peer no caller rule matches, for which a ``Watch``
does not count as in flight), eviction by the admission step, several requests in flight
keyed by their ``id``, ``Cancel``, and closing on a malformed or oversized frame after
answering ``Error``. A misbehaving client only ever hurts its own connection. Decisions are
delegated: admission and inspection requests to the ``Daemon`` (through the ``Host``
protocol), Authorize/Proxy to the broker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from aegisd import wire
from aegisd.config import CallerRule
from aegisd.daemon.broker import Broker, RequestContext
from aegisd.daemon.peer import PeerIdentity
from aegisd.errors import (
    AegisError,
    BadRequest,
    Cancelled,
    FrameTooLarge,
    RateLimited,
    ShuttingDown,
    UnsupportedProtocol,
)
from aegisd.policy import Policy

__all__ = ["Connection", "Host"]

log = logging.getLogger(__name__)

_SEND_TIMEOUT = 10.0
# One connection cannot queue unbounded work (each refusal costs an fsynced audit record).
_MAX_IN_FLIGHT = 64


class Host(Protocol):
    """What a connection needs from the daemon."""

    version: str
    broker: Broker
    handshake_timeout: float
    idle_timeout: float
    unmatched_idle_timeout: float
    stopping: bool

    @property
    def policy(self) -> Policy: ...

    @property
    def policy_generation(self) -> int: ...

    async def propose(
        self,
        msg: wire.ProposePolicy,
        peer: PeerIdentity,
        send: Callable[[wire.Pending], Awaitable[None]],
    ) -> wire.DaemonMessage:
        """A policy proposal: ``Pending`` through ``send``, then the final answer."""
        ...

    async def identify(self, stream: trio.SocketStream) -> tuple[PeerIdentity, CallerRule | None]:
        """Peer identity and matching rule; raises ``PeerRejected`` (already audited)."""
        ...

    def admit(self, conn: Connection) -> None:
        """Keep ``conn`` (its peer is known) or raise ``RateLimited``; may evict another."""
        ...

    async def record(self, event: str, **fields: object) -> None: ...

    async def inspect(
        self, msg: wire.ClientMessage, peer: PeerIdentity, rule: CallerRule | None
    ) -> wire.DaemonMessage: ...

    async def policy_changed(self, seen: int) -> int:
        """Return the policy generation once it is no longer ``seen``."""
        ...


class _Closed(Exception):
    """The connection should end (EOF, protocol violation after the Error was sent)."""


class Connection:
    def __init__(self, host: Host, stream: trio.SocketStream, conn_id: int) -> None:
        self.host = host
        self.stream = stream
        self.conn_id = conn_id
        self.peer: PeerIdentity | None = None
        self.rule: CallerRule | None = None
        self._reader = wire.FrameReader()
        self._send_lock = trio.Lock()
        self._inflight: dict[int, trio.CancelScope] = {}
        self._cancel_reason: dict[int, AegisError] = {}
        self._nursery: trio.Nursery | None = None
        self._broken = False
        self._watches: set[int] = set()  # in-flight ids that are Watch requests
        self._answering = False  # an inspection request is being answered
        self._last_active = trio.current_time()
        self._scope = trio.CancelScope()  # evict() cancels it

    # ---- admission (conn_limits.py) ----------------------------------------------------------

    def _busy(self) -> bool:
        """Something is in flight; for an unmatched peer a Watch does not count (it would
        otherwise hold its slot forever)."""
        if self._answering:
            return True
        if self.rule is None:
            return len(self._inflight) > len(self._watches)
        return bool(self._inflight)

    @property
    def idle_since(self) -> float | None:
        return None if self._busy() else self._last_active

    def evict(self) -> None:
        """Close this connection (admission needs its slot); its peer gets ``rate_limited``."""
        self._scope.cancel()

    # ---- I/O -----------------------------------------------------------------------------

    async def send(self, msg: wire.DaemonMessage) -> None:
        data = wire.encode(msg)
        async with self._send_lock:
            if self._broken:
                raise trio.BrokenResourceError("an earlier frame was cut off")
            try:
                with trio.fail_after(_SEND_TIMEOUT):
                    await self.stream.send_all(data)
            except BaseException:
                # a frame may be half written: nothing after it could be parsed, so this
                # connection sends nothing more (its reader then ends it)
                self._broken = True
                raise

    async def _next_message(self, timeout: float) -> wire.ClientMessage:
        while True:
            body = self._reader.next_frame()  # raises FrameTooLarge
            if body is not None:
                return wire.decode_client(body)  # raises BadRequest
            with trio.move_on_after(timeout) as cs:
                data = await self.stream.receive_some(65536)
            if cs.cancelled_caught:
                raise _Closed("idle")
            if not data:
                raise _Closed("eof")
            self._reader.feed(data)

    # ---- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until EOF, a protocol violation, idle timeout or daemon shutdown."""
        reason = "eof"
        try:
            with self._scope:
                reason = await self._serve()
            if self._scope.cancelled_caught:
                reason = "evicted"
                err = RateLimited(
                    "aegisd is at its connection cap and closed this idle connection "
                    "(no caller rule matches this process)",
                    retry_after=1.0,
                )
                await self._try_send(
                    wire.Error(code=err.code, message=err.message, retry_after=err.retry_after)
                )
        except _Closed as exc:  # EOF before Hello (e.g. another aegisd probing the socket)
            reason = str(exc)
        except AegisError as exc:
            reason = exc.code
            await self._try_send(
                wire.Error(code=exc.code, message=exc.message, retry_after=exc.retry_after)
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            reason = "broken"
        finally:
            self._nursery = None
            if self.peer is not None:
                with trio.CancelScope(shield=True):
                    await self.host.record(
                        "disconnect", durable=False, conn=self.conn_id, reason=reason
                    )
            await trio.aclose_forcefully(self.stream)

    async def _serve(self) -> str:
        """Handshake and read loop; returns why the connection ended (or raises)."""
        reason = "eof"
        try:
            with trio.fail_after(self.host.handshake_timeout):
                self.peer, self.rule = await self.host.identify(self.stream)
                self.host.admit(self)  # raises RateLimited: answered and closed by run()
                self._last_active = trio.current_time()
                hello = await self._next_message(self.host.handshake_timeout)
                if not isinstance(hello, wire.Hello):
                    raise BadRequest("the first message must be Hello")
                major = hello.protocol.split(".", 1)[0]
                if major != wire.PROTOCOL.split(".", 1)[0]:
                    raise UnsupportedProtocol(
                        f"daemon speaks protocol {wire.PROTOCOL}, client sent "
                        f"{hello.protocol[:16]!r}"
                    )
                await self.send(
                    wire.Welcome(
                        protocol=wire.PROTOCOL,
                        daemon_version=self.host.version,
                        peer=wire.PeerInfo(
                            uid=self.peer.uid,
                            pid=self.peer.pid,
                            exe=self.peer.exe,
                            caller=self.rule.name if self.rule else None,
                            exe_verified=self.peer.exe_verified,
                        ),
                        policy_generation=self.host.policy_generation,
                    )
                )
        except trio.TooSlowError:
            return "handshake timeout"
        await self.host.record(
            "connect",
            durable=False,
            conn=self.conn_id,
            pid=self.peer.pid,
            uid=self.peer.uid,
            exe=self.peer.exe if self.peer.exe_verified else "exe unverified",
            exe_verified=self.peer.exe_verified,
            argv0=self.peer.argv[0][:256] if self.peer.argv else "",
            caller=self.rule.name if self.rule else None,
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._read_loop(nursery)
            except _Closed as exc:
                reason = str(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                reason = "broken"  # the peer left while we answered it
            nursery.cancel_scope.cancel()  # the peer is gone: withdraw what it asked
        return reason

    async def _try_send(self, msg: wire.DaemonMessage) -> None:
        try:
            with trio.move_on_after(1.0):
                await self.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            if self._busy():
                timeout = math.inf
            elif self.rule is None:
                timeout = self.host.unmatched_idle_timeout
            else:
                timeout = self.host.idle_timeout
            try:
                msg = await self._next_message(timeout)
                self._last_active = trio.current_time()
            except (BadRequest, FrameTooLarge) as exc:
                # answer, then close: the stream can no longer be trusted to be in sync
                await self._try_send(wire.Error(code=exc.code, message=exc.message))
                raise _Closed(exc.code) from None
            if isinstance(msg, wire.Hello):
                await self._try_send(wire.Error(code="bad_request", message="second Hello"))
                raise _Closed("bad_request")
            if isinstance(msg, wire.Authorize | wire.Proxy | wire.ProposePolicy | wire.Watch):
                if self.host.stopping:
                    stop = ShuttingDown()
                    await self.send(wire.Error(id=msg.id, code=stop.code, message=stop.message))
                    continue
                if len(self._inflight) >= _MAX_IN_FLIGHT:
                    err = RateLimited(
                        f"at most {_MAX_IN_FLIGHT} requests in flight per connection",
                        retry_after=1.0,
                    )
                    await self.send(
                        wire.Error(id=msg.id, code=err.code, message=err.message, retry_after=1.0)
                    )
                    continue
                if msg.id in self._inflight:
                    await self.send(
                        wire.Error(
                            id=msg.id, code="bad_request", message="request id already in flight"
                        )
                    )
                    continue
                scope = trio.CancelScope()
                self._inflight[msg.id] = scope
                if isinstance(msg, wire.Watch):
                    self._watches.add(msg.id)
                    nursery.start_soon(self._watch, msg.id, scope)
                else:
                    nursery.start_soon(self._request, msg, scope)
            elif isinstance(msg, wire.Cancel):
                target = self._inflight.get(msg.id)
                if target is not None:
                    self._cancel_reason[msg.id] = Cancelled("cancelled by the caller")
                    target.cancel()
            else:
                assert self.peer is not None
                self._answering = True
                try:
                    answer = await self.host.inspect(msg, self.peer, self.rule)
                except AegisError as exc:
                    answer = wire.Error(
                        id=getattr(msg, "id", None), code=exc.code, message=exc.message
                    )
                try:
                    await self.send(answer)
                finally:
                    self._answering = False
                    self._last_active = trio.current_time()

    async def _request(
        self, msg: wire.Authorize | wire.Proxy | wire.ProposePolicy, scope: trio.CancelScope
    ) -> None:
        assert self.peer is not None
        ctx = RequestContext(self.conn_id, self.peer, self.rule, self.send)
        error: AegisError | None = None
        try:
            with scope:
                try:
                    if isinstance(msg, wire.ProposePolicy):
                        await self.send(await self.host.propose(msg, self.peer, self.send))
                    else:
                        await self.host.broker.handle(ctx, msg, self.host.policy)
                except AegisError as exc:
                    error = exc
            if scope.cancelled_caught:
                error = self._cancel_reason.get(msg.id)
            if error is not None:
                await self.send(
                    wire.Error(
                        id=msg.id,
                        code=error.code,
                        message=error.message,
                        retry_after=error.retry_after,
                        expires_at=getattr(error, "expires_at", None),
                    )
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass  # the peer went away; the read loop ends the connection
        finally:
            self._inflight.pop(msg.id, None)
            self._cancel_reason.pop(msg.id, None)
            self._last_active = trio.current_time()

    async def _watch(self, req_id: int, scope: trio.CancelScope) -> None:
        """One ``PolicyChanged`` now and one per reload, until cancelled or shutdown."""
        try:
            with scope:
                seen = self.host.policy_generation
                await self.send(wire.PolicyChanged(id=req_id, generation=seen))
                while True:
                    seen = await self.host.policy_changed(seen)
                    await self.send(wire.PolicyChanged(id=req_id, generation=seen))
            error = self._cancel_reason.get(req_id)
            if error is not None:
                await self.send(wire.Error(id=req_id, code=error.code, message=error.message))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass
        finally:
            self._inflight.pop(req_id, None)
            self._watches.discard(req_id)
            self._cancel_reason.pop(req_id, None)

    def shutdown(self) -> None:
        """Daemon stopping: every in-flight request ends with ``shutting_down``."""
        for req_id, scope in list(self._inflight.items()):
            self._cancel_reason[req_id] = ShuttingDown()
            scope.cancel()
