"""One request's journey: policy → approval → credential → delivery → audit (DESIGN §3).

Owns pending approvals (one push per request digest, shared by identical requests), the local
limits (pending caps, CIBA starts per minute), remembered approvals, single-use delivery, and
the audit record of every decision. It must not touch sockets (the server hands it a ``send``
callable) nor speak HTTP itself (the Auth0 client and ``proxy`` do).

Pending pushes, their owners and single use are ``approvals.py``'s: identical requests of the
same owner (its claim, else its process) share one push, and the approval is used once unless
the action opts into ``remember``, in which case every request within the TTL that the
remember scope covers is served by the one approval. ``lock`` voids what was approved before
it, including a credential being fetched at that moment.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import httpx
import trio

from aegisd.auth0.tokens import Approval, token_fingerprint
from aegisd.config import CallerRule
from aegisd.daemon import proxy
from aegisd.daemon.approvals import ApprovalRequest, Approvals, Approver, PeerKey, Recorder
from aegisd.daemon.limits import RememberCache
from aegisd.daemon.peer import PeerIdentity, explain_no_match
from aegisd.errors import (
    AegisError,
    ApprovalPending,
    BadRequest,
    Cancelled,
    Internal,
    PeerRejected,
    PolicyDenied,
)
from aegisd.policy import CompiledAction, Policy, request_digest
from aegisd.wire import (
    Authorize,
    DaemonMessage,
    Grant,
    Granted,
    PendingInfo,
    Proxy,
    ProxyResponse,
)

__all__ = ["Approver", "Broker", "Recorder", "RequestContext"]

log = logging.getLogger(__name__)

_MIN_CLAIM: Final = 16
_MAX_CLAIM: Final = 64
_MIN_WAIT: Final = 0.5


@dataclass
class RequestContext:
    """The connection a request came in on."""

    conn_id: int
    peer: PeerIdentity
    rule: CallerRule | None
    send: Callable[[DaemonMessage], Awaitable[None]]


def _withdrawn_event(base: dict[str, object]) -> str:
    """``interrupted`` when a proxied request may already have reached the API."""
    return "interrupted" if base.get("upstream") == "maybe_sent" else "withdrawn"


def _owner(ctx: RequestContext, claim: bytes | None) -> str:
    """Whose approval this is: the requester's claim, else its process (module docstring)."""
    if claim is None:
        # the start time tells a reused pid apart: a new process on an old pid is not the owner
        peer = ctx.peer
        return f"pid:{peer.uid}:{peer.pid}:{peer.start_time}"
    if not _MIN_CLAIM <= len(claim) <= _MAX_CLAIM:
        raise BadRequest(f"a claim is {_MIN_CLAIM} to {_MAX_CLAIM} random bytes")
    # only a hash is kept: the audit and memory never hold what proves ownership
    return "claim:" + hashlib.sha256(claim).hexdigest()


class Broker:
    """Turns Authorize/Proxy requests into decisions. Run ``serve`` in the daemon's nursery."""

    def __init__(self, *, approvals: Approvals, record: Recorder, http: httpx.AsyncClient) -> None:
        self._record = record
        self._http = http
        self.approvals = approvals
        self._remember: RememberCache[Approval] = RememberCache()

    # ---- lifecycle -----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pollers' nursery until cancelled; pending approvals end ``shutting_down``."""
        await self.approvals.serve(task_status=task_status)

    def shutdown(self) -> None:
        """End every pending approval with ``shutting_down`` (their waiters get that code)."""
        self.approvals.shutdown()

    def lock(self) -> tuple[int, int]:
        """Cancel every pending approval and forget every remembered one."""
        return self.approvals.lock(), self._remember.clear()

    def cancel_pending(self, pending_id: str, requester: PeerKey | None = None) -> bool:
        """Cancel one approval; with ``requester``, only one that process asked for."""
        return self.approvals.cancel_pending(pending_id, requester)

    def forget_remembered(self, actions: list[str]) -> int:
        return sum(self._remember.forget_action(a) for a in actions)

    def pending(self, requester: PeerKey | None = None) -> list[PendingInfo]:
        """Approvals whose push is out (those still being sent have no expiry yet); with
        ``requester``, only those that process asked for."""
        return self.approvals.pending(requester)

    @property
    def pending_count(self) -> int:
        return self.approvals.count

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
                raise PeerRejected(explain_no_match(peer, policy.callers))
            owner = _owner(ctx, msg.claim)
            if msg.max_wait is not None and (msg.claim is None or not msg.max_wait >= _MIN_WAIT):
                raise BadRequest(
                    f"max_wait needs a claim and at least {_MIN_WAIT} s: without a claim "
                    "nobody could come back for the approval"
                )
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
                claimed=msg.claim is not None or None,
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
            epoch = self.approvals.epoch
            if spec.approval == "ciba":
                req = ApprovalRequest(
                    req_id=msg.id,
                    caller=ctx.rule.name,
                    action=action,
                    params=params,
                    digest=digest,
                    owner=owner,
                    policy=policy,
                    base=base,
                    send=ctx.send,
                    max_wait=msg.max_wait,
                    peer=ctx.peer,
                )
                approval = await self._approve(req, ctx.rule)
                epoch = self.approvals.epoch  # read with the claim: no await in between
            await self._deliver(ctx, msg, action, params, approval, epoch, base)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._record(_withdrawn_event(base), **base, by="caller")
            raise
        except AegisError as exc:
            if "digest" not in base:
                # refused before the request was recorded: record request and refusal as one
                base["params_keys"] = sorted(msg.params)[:32]
            with trio.CancelScope(shield=True):  # the caller is told: the record must land
                if isinstance(exc, ApprovalPending):
                    await self._record("detached", **base, expires_at=exc.expires_at)
                else:
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

    async def _approve(self, req: ApprovalRequest, rule: CallerRule) -> Approval:
        """A remembered approval if the action opts in and one is live, else the person's."""
        key = self._remember_key(req.action, rule, req.digest)
        if key is not None:
            hit = self._remember.get(key, trio.current_time())
            if hit is not None:
                await self._record("approval_reused", **req.base, scope=key[0])
                return hit
        approval = await self.approvals.approve(req)
        remember = req.action.spec.remember
        if key is not None and remember is not None:
            # synchronous with the claim, so a lock cannot slip in between and leave it behind
            self._remember.put(key, approval, trio.current_time() + remember.ttl)
        return approval

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

    async def _deliver(
        self,
        ctx: RequestContext,
        msg: Authorize | Proxy,
        action: CompiledAction,
        params: dict[str, str],
        approval: Approval | None,
        epoch: int,
        base: dict[str, object],
    ) -> None:
        spec = action.spec
        token: str | None = None
        token_type = "Bearer"
        grant: Grant | None = None
        if spec.credential.kind != "none":
            approver = self.approvals.approver
            assert approval is not None and approver is not None
            cred = await approver.obtain_credential(spec.credential, approval)
            if self.approvals.epoch != epoch:
                del cred  # a lock came while the credential was fetched: it is never used
                raise Cancelled("cancelled by aegisctl lock")
            token, token_type = cred.access_token, cred.token_type
            await self._record(
                "credential",
                durable=False,  # the "delivered"/"proxied" record's fsync covers it
                **base,
                kind=cred.kind,
                connection=cred.connection,
                path=cred.path,
                fingerprint=cred.fingerprint,
                expires_at=cred.expires_at,
                revocation=cred.refresh_token_revocation,  # of the refresh token; None: none
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
            self._http,
            action,
            params,
            body,
            credential=token,
            token_type=token_type,
            audit=lambda event, **f: self._record(event, **base, **f),
        )
        token = None  # single use: the daemon keeps nothing once the request is made
        with trio.CancelScope(shield=True):  # done upstream: the record must land
            await self._record("proxied", **base, status=result.status, bytes=len(result.body))
        await ctx.send(
            ProxyResponse(id=msg.id, status=result.status, headers=result.headers, body=result.body)
        )
