"""One request's journey: policy → approval → credential → delivery → audit (DESIGN §3).

Owns pending approvals (one push per request digest, shared by identical requests), the local
limits (pending caps, CIBA starts per minute), remembered approvals, single-use delivery, and
the audit record of every decision. It must not touch sockets (the server hands it a ``send``
callable) nor speak HTTP itself (the Auth0 client and ``proxy`` do).

Coalescing and single use: identical requests (same caller, action and parameters, hence the
same digest) that arrive while a push is pending wait on that one push. An approval is then
used exactly once: the first waiter gets the credential; the others start a fresh approval of
their own, unless the action opts into ``remember``, in which case every waiter within the TTL
is served by the one approval.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import trio

from aegisd import proxy
from aegisd.auth0.rar import guardian_details
from aegisd.auth0.tokens import Approval, CibaStart, Credential, token_fingerprint
from aegisd.config import CallerRule, CredentialSpec
from aegisd.errors import (
    AegisError,
    ApprovalUnavailable,
    Cancelled,
    Internal,
    PeerRejected,
    PolicyDenied,
    ShuttingDown,
)
from aegisd.limits import PendingCaps, RememberCache, SlidingWindow
from aegisd.peer import PeerIdentity
from aegisd.policy import CompiledAction, Policy, request_digest
from aegisd.wire import (
    Authorize,
    DaemonMessage,
    Grant,
    Granted,
    Pending,
    PendingInfo,
    Proxy,
    ProxyResponse,
)

__all__ = ["Approver", "Broker", "Recorder", "RequestContext"]

log = logging.getLogger(__name__)


class Approver(Protocol):
    """What the broker needs from the Auth0 client (``aegisd.auth0.client.Auth0Client``)."""

    async def start_approval(
        self,
        *,
        binding_message: str,
        authorization_details: list[dict[str, object]] | None = None,
        offline_access: bool = False,
        scopes: Sequence[str] = (),
    ) -> CibaStart: ...

    async def wait_approval(self, start: CibaStart) -> Approval: ...

    async def obtain_credential(self, spec: CredentialSpec, approval: Approval) -> Credential: ...


class Recorder(Protocol):
    """Durable audit: returns only once the record is on disk."""

    async def __call__(self, event: str, **fields: object) -> None: ...


@dataclass
class RequestContext:
    """The connection a request came in on."""

    conn_id: int
    peer: PeerIdentity
    rule: CallerRule | None
    send: Callable[[DaemonMessage], Awaitable[None]]


@dataclass(eq=False)
class _PendingApproval:
    pending_id: str
    digest: str
    action: str
    caller: str
    binding_message: str
    started_at: float
    expires_at: float
    policy: Policy
    waiters: int = 0
    claimed: bool = False
    outcome: Approval | AegisError | None = None
    cancel_reason: AegisError | None = None
    launch_cancelled: bool = False
    started: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def info(self) -> PendingInfo:
        return PendingInfo(
            pending_id=self.pending_id,
            action=self.action,
            caller=self.caller,
            binding_message=self.binding_message,
            digest=self.digest,
            started_at=self.started_at,
            expires_at=self.expires_at,
            waiters=self.waiters,
        )


def _withdrawn_event(base: dict[str, object]) -> str:
    """``interrupted`` when a proxied request may already have reached the API."""
    return "interrupted" if base.get("upstream") == "maybe_sent" else "withdrawn"


def _copy(exc: AegisError) -> AegisError:
    """A fresh exception per waiter (one instance must not be raised in several tasks)."""
    return type(exc)(exc.message, retry_after=exc.retry_after)


class Broker:
    """Turns Authorize/Proxy requests into decisions. Run ``serve`` in the daemon's nursery."""

    def __init__(
        self,
        *,
        approver: Approver | None,
        record: Recorder,
        http: httpx.AsyncClient,
        now: Callable[[], float],
        max_pending: int = 1024,
        max_pending_per_caller: int = 32,
        ciba_starts_per_minute: int = 5,
        authorization_details: bool = False,
        offline_access: bool = False,
    ) -> None:
        self._approver = approver
        self._record = record
        self._http = http
        self._now = now
        self._caps = PendingCaps(max_pending, max_pending_per_caller)
        self._window = SlidingWindow(ciba_starts_per_minute, 60.0)
        self._rar = authorization_details
        self._offline = offline_access
        self._by_digest: dict[str, _PendingApproval] = {}
        self._by_id: dict[str, _PendingApproval] = {}
        self._remember: RememberCache[Approval] = RememberCache()
        self._nursery: trio.Nursery | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pollers' nursery until cancelled; pending approvals end ``shutting_down``."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def shutdown(self) -> None:
        """End every pending approval with ``shutting_down`` (their waiters get that code)."""
        for pa in list(self._by_id.values()):
            pa.cancel_reason = ShuttingDown()
            pa.scope.cancel()

    def lock(self) -> tuple[int, int]:
        """Cancel every pending approval and forget every remembered one."""
        n = 0
        for pa in list(self._by_id.values()):
            pa.cancel_reason = Cancelled("cancelled by aegisctl lock")
            pa.scope.cancel()
            n += 1
        return n, self._remember.clear()

    def cancel_pending(self, pending_id: str) -> bool:
        pa = self._by_id.get(pending_id)
        if pa is None:
            return False
        pa.cancel_reason = Cancelled("cancelled by the operator")
        pa.scope.cancel()
        return True

    def forget_remembered(self, actions: list[str]) -> int:
        return sum(self._remember.forget_action(a) for a in actions)

    def pending(self) -> list[PendingInfo]:
        """Approvals whose push is out (those still being sent have no expiry yet)."""
        return [pa.info() for pa in self._by_id.values() if pa.started.is_set()]

    @property
    def pending_count(self) -> int:
        return len(self._by_id)

    # ---- requests ------------------------------------------------------------------------

    async def handle(self, ctx: RequestContext, msg: Authorize | Proxy, policy: Policy) -> None:
        """Answer one request: sends ``Pending`` events and exactly one final message.

        Raises an ``AegisError`` for the connection to turn into ``Error{id, code}``; it has
        already been audited.
        """
        peer = ctx.peer
        base: dict[str, object] = {
            "conn": ctx.conn_id,
            "request": msg.id,
            "pid": peer.pid,
            "uid": peer.uid,
            "exe": peer.exe,
            "caller": ctx.rule.name if ctx.rule else None,
            "action": msg.action[:128],
            "mode": "proxy" if isinstance(msg, Proxy) else "authorize",
        }
        digest = ""
        try:
            if ctx.rule is None:
                raise PeerRejected()
            action = policy.action_for(ctx.rule, msg.action)
            params = action.check_params(msg.params)
            body = msg.body if isinstance(msg, Proxy) else None
            # the body is part of what is approved: same params, other body, other digest
            digest = request_digest(ctx.rule.name, action.name, params, body)
            base["digest"] = digest
            # not fsynced on its own: the decision that answers this request is, and one fsync
            # makes every earlier line of the file durable with it
            await self._record(
                "request",
                **base,
                params=params,
                body_sha256=hashlib.sha256(body).hexdigest() if body is not None else None,
                body_bytes=len(body) if body is not None else None,
                durable=False,
            )
            spec = action.spec
            if spec.approval == "deny":
                raise PolicyDenied()
            if isinstance(msg, Authorize) and spec.delivery == "proxy":
                raise PolicyDenied(
                    "this action is proxy-only (its credential never leaves aegisd): use proxy()"
                )
            if isinstance(msg, Proxy) and spec.delivery == "token":
                raise PolicyDenied("this action delivers a token: use authorize()")
            approval: Approval | None = None
            if spec.approval == "ciba":
                approval = await self._approve(ctx, msg.id, action, params, digest, policy, base)
            await self._deliver(ctx, msg, action, params, approval, base)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._record(_withdrawn_event(base), **base, by="caller")
            raise
        except AegisError as exc:
            if "digest" not in base:
                # refused before the request was recorded: record request and refusal as one
                base["params_keys"] = sorted(msg.params)[:32]
            with trio.CancelScope(shield=True):  # the caller is told: the record must land
                await self._record("refused", **base, code=exc.code, reason=exc.message)
            raise
        except Exception:
            log.exception("internal error handling request %s", msg.id)
            with trio.CancelScope(shield=True):
                await self._record("refused", **base, code="internal", reason="internal error")
            raise Internal() from None
        except BaseExceptionGroup as group:
            # httpx (anyio task groups) can deliver a cancellation as a group of Cancelled
            _, rest = group.split(trio.Cancelled)
            with trio.CancelScope(shield=True):
                if rest is None:
                    await self._record(_withdrawn_event(base), **base, by="caller")
                else:
                    log.error("internal error handling request %s", msg.id, exc_info=rest)
                    await self._record("refused", **base, code="internal", reason="internal error")
            if rest is None:
                raise
            raise Internal() from None

    async def _approve(
        self,
        ctx: RequestContext,
        req_id: int,
        action: CompiledAction,
        params: dict[str, str],
        digest: str,
        policy: Policy,
        base: dict[str, object],
    ) -> Approval:
        assert ctx.rule is not None
        remember = action.spec.remember
        while True:
            key = self._remember_key(action, ctx.rule, digest)
            if key is not None:
                hit = self._remember.get(key, trio.current_time())
                if hit is not None:
                    await self._record("approval_reused", **base, scope=key[0])
                    return hit
            pa = self._by_digest.get(digest)
            launcher = pa is None
            if pa is None:
                pa = self._reserve(ctx.rule, action, params, digest, policy)
            # counted before any await, so the launcher leaving cannot withdraw our push
            pa.waiters += 1
            try:
                if launcher:
                    await self._launch(pa, ctx.rule, action, params, base, ctx.peer)
                else:
                    await self._record("coalesced", **base, pending_id=pa.pending_id)
                    await pa.started.wait()
                if not pa.done.is_set():
                    await ctx.send(
                        Pending(
                            id=req_id,
                            binding_message=pa.binding_message,
                            expires_at=pa.expires_at,
                            digest=digest,
                        )
                    )
                    await pa.done.wait()
            finally:
                pa.waiters -= 1
                if pa.waiters == 0 and not pa.done.is_set():
                    pa.cancel_reason = Cancelled("withdrawn by the caller")
                    pa.scope.cancel()
            if pa.launch_cancelled and not launcher:
                continue  # the request that started the push went away first: start our own
            outcome = pa.outcome
            if isinstance(outcome, AegisError):
                raise _copy(outcome)
            if outcome is None:  # pragma: no cover - the poller always sets an outcome
                raise Internal()
            if not pa.claimed:
                pa.claimed = True
                if key is not None and remember is not None:
                    self._remember.put(key, outcome, trio.current_time() + remember.ttl)
                return outcome
            # Another identical request consumed this approval: single use means a fresh push.

    @staticmethod
    def _remember_key(
        action: CompiledAction, rule: CallerRule, digest: str
    ) -> tuple[str, ...] | None:
        rem = action.spec.remember
        if rem is None or rem.ttl <= 0:
            return None
        if rem.scope == "request":
            return ("request", action.name, digest)
        return ("action", action.name, rule.name)

    def _reserve(
        self,
        rule: CallerRule,
        action: CompiledAction,
        params: dict[str, str],
        digest: str,
        policy: Policy,
    ) -> _PendingApproval:
        """Check the local limits and register the approval *before* any await, so identical
        requests arriving while the push is being sent join it instead of sending another."""
        if self._approver is None or self._nursery is None:
            raise ApprovalUnavailable("no [auth0] section is configured, so nobody can approve")
        self._caps.acquire(rule.name)
        try:
            self._window.take(trio.current_time())
        except BaseException:
            self._caps.release(rule.name)
            raise
        pa = _PendingApproval(
            pending_id=secrets.token_hex(4),
            digest=digest,
            action=action.name,
            caller=rule.name,
            binding_message=action.binding_message(params, digest),
            started_at=self._now(),
            expires_at=0.0,
            policy=policy,
        )
        self._by_digest[digest] = pa
        self._by_id[pa.pending_id] = pa  # lock/cancel can reach it while the push is sent
        return pa

    async def _launch(
        self,
        pa: _PendingApproval,
        rule: CallerRule,
        action: CompiledAction,
        params: dict[str, str],
        base: dict[str, object],
        peer: PeerIdentity,
    ) -> None:
        """Send the push; on success hand the approval to a poller in the broker's nursery."""
        assert self._approver is not None and self._nursery is not None
        details: list[dict[str, object]] | None = None
        if self._rar:
            details = guardian_details(
                action=action.name,
                binding_message=pa.binding_message,
                caller=rule.name,
                exe=peer.exe,
                pid=peer.pid,
                params=params,
            )
        try:
            start = await self._approver.start_approval(
                binding_message=pa.binding_message,
                authorization_details=details,
                # a refresh token lets Token Vault use its documented refresh-token exchange
                offline_access=self._offline and action.spec.credential.kind == "token_vault",
                # API permissions the handed-out CIBA token must carry (Guardian shows them)
                scopes=(
                    action.spec.credential.scopes
                    if action.spec.credential.kind == "ciba_token"
                    else ()
                ),
            )
        except BaseException as exc:
            self._by_digest.pop(pa.digest, None)
            self._by_id.pop(pa.pending_id, None)
            self._caps.release(pa.caller)
            if isinstance(exc, AegisError):
                pa.outcome = exc
            else:
                pa.launch_cancelled = True
                pa.outcome = Cancelled("withdrawn before the push was sent")
            pa.done.set()
            pa.started.set()
            raise
        pa.expires_at = start.expires_at
        # The push is out: from here on, a poller must own it even if this caller leaves.
        try:
            with trio.CancelScope(shield=True):
                await self._record(
                    "pending",
                    **base,
                    pending_id=pa.pending_id,
                    auth_req=start.request_fingerprint,  # the same name the daemon's log uses
                    binding_message=pa.binding_message,
                    expires_at=start.expires_at,
                )
        except AegisError as exc:
            # the audit log failed: release nothing, and let identical requests fail too
            self._by_digest.pop(pa.digest, None)
            self._by_id.pop(pa.pending_id, None)
            self._caps.release(pa.caller)
            pa.outcome = exc
            pa.done.set()
            pa.started.set()
            raise
        self._nursery.start_soon(self._poll, pa, start, base)
        pa.started.set()

    async def _poll(self, pa: _PendingApproval, start: CibaStart, base: dict[str, object]) -> None:
        assert self._approver is not None
        t0 = trio.current_time()
        event, extra = "withdrawn", dict[str, object]()
        try:
            with pa.scope:
                try:
                    approval = await self._approver.wait_approval(start)
                except AegisError as exc:
                    pa.outcome = exc
                    event = {
                        "approval_denied": "denied",
                        "approval_expired": "expired",
                    }.get(exc.code, "approval_failed")
                    extra = {"code": exc.code, "reason": exc.message}
                except Exception:
                    log.exception("approval %s failed", pa.pending_id)
                    pa.outcome = Internal()
                    event, extra = "approval_failed", {"code": "internal"}
                else:
                    pa.outcome = approval
                    event = "approved"
                    extra = {"sub": approval.sub, "latency": round(trio.current_time() - t0, 3)}
            if pa.outcome is None:
                pa.outcome = pa.cancel_reason or Cancelled("withdrawn")
                extra = {"code": pa.outcome.code, "reason": pa.outcome.message}
        finally:
            self._by_digest.pop(pa.digest, None)
            self._by_id.pop(pa.pending_id, None)
            self._caps.release(pa.caller)
            if pa.outcome is None:
                pa.outcome = pa.cancel_reason or ShuttingDown()
            with trio.CancelScope(shield=True):
                await self._record(event, **base, pending_id=pa.pending_id, **extra)
            pa.done.set()

    async def _deliver(
        self,
        ctx: RequestContext,
        msg: Authorize | Proxy,
        action: CompiledAction,
        params: dict[str, str],
        approval: Approval | None,
        base: dict[str, object],
    ) -> None:
        spec = action.spec
        token: str | None = None
        token_type = "Bearer"
        grant: Grant | None = None
        if spec.credential.kind != "none":
            assert approval is not None and self._approver is not None
            cred = await self._approver.obtain_credential(spec.credential, approval)
            token, token_type = cred.access_token, cred.token_type
            await self._record(
                "credential",
                durable=False,  # the "delivered"/"proxied" record's fsync covers it
                **base,
                kind=cred.kind,
                connection=cred.connection,
                path=cred.path,
                revocation=cred.refresh_token_revocation,  # of the refresh token; None: none minted
                fingerprint=cred.fingerprint,
                expires_at=cred.expires_at,
            )
            if spec.delivery == "token":
                grant = Grant(
                    access_token=cred.access_token,
                    token_type=cred.token_type,
                    expires_at=cred.expires_at,
                    scope=cred.scope,
                    kind=cred.kind,
                    connection=cred.connection,
                )
            del cred
        if spec.delivery == "token":
            assert grant is not None
            await self._record(
                "delivered", **base, fingerprint=token_fingerprint(grant.access_token)
            )
            await ctx.send(Granted(id=msg.id, grant=grant))
            return
        body = msg.body if isinstance(msg, Proxy) else None
        # From here a cancellation (caller, lock, SIGTERM) may cut off a request that already
        # reached the API: the audit then says so ("interrupted"), not merely "withdrawn".
        base["upstream"] = "maybe_sent"
        result = await proxy.perform(
            self._http, action, params, body, credential=token, token_type=token_type
        )
        token = None  # single use: the daemon keeps nothing once the request is made
        with trio.CancelScope(shield=True):  # done upstream: the record must land
            await self._record("proxied", **base, status=result.status, bytes=len(result.body))
        await ctx.send(
            ProxyResponse(id=msg.id, status=result.status, headers=result.headers, body=result.body)
        )
